"""Personal data in the ledger: fields sealed per data subject at ingest (sealed), the subject keys apart
from the log (keystore, keys), the ledger's sealing (personal), and export and erasure (subjects).
See docs/privacy.md."""
