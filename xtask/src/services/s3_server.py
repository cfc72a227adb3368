# The S3 server of the tests: moto's server application, with each request atomic.
#
# `moto_server` serves each request on a thread of its own, and moto's S3 backend is not safe
# for that: a conditional PUT (If-None-Match, If-Match) checks and writes in two steps, and two
# threads reading one object share its spooled file. Under load, two racing claims both won and
# readers saw torn claim objects. Real S3 makes each request atomic; this wrapper restores that
# with locks around the whole application call (the body is read inside them):
#
# - a request on one object (`/bucket/key...`) holds that object's lock, and shares the bucket;
# - a request on a bucket (list, bulk delete, create) holds the bucket alone.
#
# So requests on different objects still run side by side: a small claim write does not queue
# behind an 8 MiB value being stored, which kept leases from being renewed in time.
#
# Usage: cachier-s3-server [-H HOST] [-p PORT]  (the options of moto_server that xtask uses)

import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class SharedExclusive:
    """A lock many may share or one may hold alone; those waiting alone go first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    def share(self):
        with self._cond:
            while self._alone or self._waiting_alone:
                self._cond.wait()
            self._sharing += 1

    def unshare(self):
        with self._cond:
            self._sharing -= 1
            self._cond.notify_all()

    def hold(self):
        with self._cond:
            self._waiting_alone += 1
            while self._alone or self._sharing:
                self._cond.wait()
            self._waiting_alone -= 1
            self._alone = True

    def release(self):
        with self._cond:
            self._alone = False
            self._cond.notify_all()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    buckets = SharedExclusive()
    objects = {}
    objects_guard = threading.Lock()

    def atomic(environ, start_response):
        path = environ.get("PATH_INFO", "/").lstrip("/")
        bucket, _, key = path.partition("/")
        if not key:
            buckets.hold()
            try:
                return list(app(environ, start_response))
            finally:
                buckets.release()
        with objects_guard:
            lock, users = objects.get(path, (None, 0))
            lock = lock or threading.Lock()
            objects[path] = (lock, users + 1)
        buckets.share()
        try:
            with lock:
                return list(app(environ, start_response))
        finally:
            buckets.unshare()
            with objects_guard:
                lock, users = objects[path]
                if users == 1:
                    del objects[path]
                else:
                    objects[path] = (lock, users - 1)

    run_simple(args.host, args.port, atomic, threaded=True)


if __name__ == "__main__":
    main()
