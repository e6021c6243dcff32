"""pytest plugin for crash hunts (`-p gc_trace`, this folder on PYTHONPATH): writes each test's start and each
cyclic garbage collection's start and stop to $GC_TRACE (default gc_trace.log), unbuffered. After a segfault its last
lines say which test was running and whether the collector was (a C++ destructor it ran, e.g. a CUDA graph's).
A failure is printed the moment it happens: pytest keeps its report for the end of the run, which a crash never
reaches."""
import gc
import os

_fd = os.open(os.environ.get('GC_TRACE', 'gc_trace.log'), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)


def _on_gc(phase, info):
    os.write(_fd, f'gc {phase} generation {info["generation"]} collected {info.get("collected", "-")}\n'.encode())


gc.callbacks.append(_on_gc)


def pytest_runtest_setup(item):
    os.write(_fd, f'TEST {item.nodeid}\n'.encode())


def pytest_runtest_logreport(report):
    if report.failed:
        text = f'\n=== FAILED {report.nodeid} ({report.when}):\n' + '\n'.join(report.longreprtext.splitlines()[-30:])
        os.write(2, text.encode() + b'\n')
        os.write(_fd, text.encode() + b'\n')
