"""C2SP tlog-witness: a witness anyone can run (``lineage witness serve``), and the ledger's side of it,
which asks witnesses to cosign each new checkpoint and keeps their cosignatures with it."""
