"""The checks behind ``ledger.verify.verify_ledger``, one module per kind of check.

``ledger.verify`` is the public home (``verify_ledger``, ``VerifyReport``, ``Problem``) and holds the short
driver that composes these:

* ``report``: what a check reports (``Problem``) and the report it adds to;
* ``setup``: the settings recorded at creation, the log key chain, the producer keys;
* ``entries``: one entry's bytes against its leaf hash and its derived columns, an event against its envelope;
* ``blocks``: a block's seal against its entries, and the chain of block headers;
* ``chains``: the per-subject hash chains across chunks;
* ``subject_map``: the verifier's own subject map, and the stored map completeness proofs are read from;
* ``log``: Merkle hashing in bulk, stored tree nodes, checkpoints and their consistency;
* ``verdicts``: the lifecycle verdicts judged again under the recorded policy;
* ``derived``: the store's derived indexes (links, subject index, revocations, stored rows);
* ``chunk``: one chunk of whole blocks, checked in a worker; ``workers`` runs the chunks; ``merge`` folds
  their results in log order.
"""
