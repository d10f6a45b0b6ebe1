"""A local GCS server for the tests: gcp-storage-emulator in memory, with two gaps filled.

    python tests/gcs_emulator.py PORT BUCKET [BUCKET ...]

- gcsfs renames an object with the JSON API's `moveTo` first; the emulator answers 501, which gcsfs
  retries with backoff for about 30 s before it copies and deletes. Serving `moveTo` as a copy and a
  delete keeps each rename at milliseconds.
- A download carries no `x-goog-generation` header, which tensorstore (Orbax's arrays) reads from
  every object it reads back: without it, reading an OCDBT manifest fails ("Malformed StorageGeneration").
Clients that stop reading early (ranged reads) are not logged as server errors.
"""

import socketserver
import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import buckets, objects


def _move(request, response, storage, *args, **kwargs):
    params = request.params
    try:
        moved = objects._copy(request.base_url, storage, params["bucket_name"], params["object_id"],
                              params["bucket_name"], params["dest_object_id"])
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    objects._delete(storage, params["bucket_name"], params["object_id"])
    response.json(moved)


def _download(request, response, storage, *args, **kwargs):
    _emulator_download(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        stored = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = stored["generation"]
        response["x-goog-metageneration"] = stored["metageneration"]


_emulator_download = objects.download
_MOVE_ROUTE = (r"^(?:/storage/v1)?/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
               r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {server.POST: _move})


def _handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
        socketserver.BaseServer.handle_error(self, request, client_address)


def main() -> None:
    port, bucket_names = int(sys.argv[1]), sys.argv[2:]
    objects.download = _download  # the JSON API's alt=media GET calls it by this name
    server.HANDLERS = (_MOVE_ROUTE, *((route, {method: _download if handler is _emulator_download else handler
                                               for method, handler in handlers.items()})
                                      for route, handlers in server.HANDLERS))
    server.server.HTTPServer.handle_error = _handle_error
    emulator = server.create_server("127.0.0.1", port, in_memory=True)
    for name in bucket_names:
        buckets.create_bucket(name, emulator._storage)
    emulator.run()


if __name__ == "__main__":
    main()
