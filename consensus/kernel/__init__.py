"""The shared kernel (docs/ARCHITECTURE.md): the primitives every layer uses and that
import nothing of ours: the canonical codec (``codec``), hashing and Ed25519
signatures (``crypto``), the error types (``errors``) and the byte limits of every
decoded type (``limits``). ``consensus/``, ``sharding/`` and ``node/`` build on it.
"""
