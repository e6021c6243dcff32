"""Error-message helpers shared by every layer (imports nothing from ganinv_core)."""


def exc_line(e: BaseException) -> str:
    """``'TypeName: first line of the message'`` (``'TypeName'`` alone when the message is empty): an exception
    quoted inside a one-line error or warning, whose own message may run to many lines (torch's do)."""
    msg = str(e).strip()
    return f'{type(e).__name__}: {msg.splitlines()[0]}' if msg else type(e).__name__


def out_of_memory(e: BaseException) -> bool:
    """A device (CUDA, MPS) or the host ran out of memory: the run's size, never a component's fault."""
    import torch
    said = ("can't allocate memory", 'MPS backend out of memory')   # the CPU's and Apple's allocators
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in said))
