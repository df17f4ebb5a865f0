"""Fuzzing of shardnet's decoders of untrusted bytes (``shardnet fuzz``).

``targets.py`` is the registry (one ``Target`` a decoder: the inputs it is fed and
what it runs on each), ``shapes.py`` draws msgpack values of a decoder's own type
with hypothesis, ``mutations.py`` is a plain seeded mutator bending valid encodings
(bit flips, truncation, splicing, length lies, deep nesting, huge declared sizes),
``corpus.py`` builds the valid, signed samples they start from, and ``engine.py``
runs a target for a counted, seeded number of inputs: hypothesis draws the sources
and the mutator's seeds, and shrinks a failing draw. A decoder may refuse an input
only with its typed error (a ``ShardnetError`` with a reason); anything else is a
finding, reported with the input as hex.
"""
