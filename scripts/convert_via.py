r"""Converts a VGG Image Annotator (VIA 1.x / 2.x) polygon json to a COCO instances json.

  python scripts/convert_via.py --via ../shared/data/balloon/raw/train/via_region_data.json \
      --images ../shared/data/balloon/images --output /tmp/balloon_train.json --category balloon
"""

import argparse
import json
import sys

from maskrcnn_jax.data import via
from maskrcnn_jax.data.validation import DatasetFileError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--via", required=True, help="VIA json (export or VIA 2 project file)")
    parser.add_argument("--images", required=True, help="folder with the images (their sizes are read from them)")
    parser.add_argument("--output", required=True, help="COCO json to write")
    parser.add_argument("--category", default="object", help="category of regions that name none")
    parser.add_argument("--category-attribute", default=None,
                        help="region attribute that holds each region's category name")
    args = parser.parse_args()
    try:
        entries = via.load_via_json(args.via)
    except DatasetFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dataset, skipped = via.via_to_coco(entries, args.images, category_attribute=args.category_attribute,
                                       default_category=args.category)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(dataset, handle)
    print(f"wrote {args.output}: {len(dataset['images'])} images, {len(dataset['annotations'])} annotations, "
          f"categories {[c['name'] for c in dataset['categories']]}")
    for reason, count in sorted(skipped.items()):
        print(f"skipped {count}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
