"""Helper package of the executable book "Local Substitutes"."""


def _swallow_highs_banner() -> None:
    """HiGHS prints its licence banner on stdout (at C level) when the first ``Highs`` object of a process is
    made, before any option can turn output off; in a notebook it lands in a cell's output.  Make that first
    object here with file descriptor 1 pointed at /dev/null, so the banner never reaches a page."""
    import ctypes
    import os
    import sys

    try:
        import highspy
    except ImportError:
        return
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
        libc.fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_swallow_highs_banner()
