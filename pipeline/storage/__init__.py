"""S3, the ledger: object access, the provenance and failure records beside each output, and listing scans."""
