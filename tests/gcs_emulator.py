"""The Cloud Storage emulator the tests run: PyPI's gcp-storage-emulator, in memory, on 127.0.0.1.

  python tests/gcs_emulator.py PORT BUCKET

One addition: a media download also answers with the object's generation in `x-goog-generation`,
as Cloud Storage does. tensorstore (orbax's array writer) reads a downloaded object's generation
from that header and refuses the download without it ("Malformed StorageGeneration"); the
emulator sends the generation only in the JSON metadata.
"""
import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # not found: the response already says so
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj["metageneration"])


# GET .../o/OBJECT?alt=media (the JSON API, which tensorstore uses) looks `download` up here.
objects.download = _download_with_generation


def main(port: int, bucket: str) -> None:
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()  # until killed


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
