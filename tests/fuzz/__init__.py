"""The interleaving fuzzer: random plans (`plan`) run in real livekit sessions on a
virtual clock (`harness`), checked by the `oracle`; ``python -m tests.fuzz`` (or
``make fuzz``) runs it for long, ``tests/test_fuzz.py`` for a minute in the suite."""
