-- Each tenant other than `default` admits self-registration only with its own registration
-- token (contract section 3). `homeserver admin create-tenant` makes the token and prints it
-- once; only its SHA-256 is stored (unpadded standard base64, like session tokens). NULL: no
-- token was ever made, so nobody can register into the tenant (accounts come from the CLI).
ALTER TABLE tenants ADD COLUMN registration_token_hash TEXT;
