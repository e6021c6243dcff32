"""Error-message helpers shared by every layer (imports nothing from ganinv_core)."""


def exc_line(e: BaseException, limit: int | None = None) -> str:
    """``'TypeName: first line of the message'`` (``'TypeName'`` alone when the message is empty): an exception
    quoted inside a one-line error or warning, whose own message may run to many lines (torch's do). ``limit``:
    at most that many characters of the message, cut after its last whole sentence that fits (CUDA's
    out-of-memory line runs to 600), else at the limit with an ellipsis."""
    msg = str(e).strip()
    if not msg:
        return type(e).__name__
    msg = msg.splitlines()[0]
    if limit is not None and len(msg) > limit:
        end = msg.rfind('. ', 0, limit)
        msg = msg[:end + 1] if end > 0 else msg[:limit].rstrip() + '…'
    return f'{type(e).__name__}: {msg}'


def out_of_memory(e: BaseException) -> bool:
    """A device (CUDA, MPS) or the host ran out of memory: the run's size, never a component's fault."""
    import torch
    said = ("can't allocate memory", 'MPS backend out of memory')   # the CPU's and Apple's allocators
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in said))
