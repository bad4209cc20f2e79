-- Federation II: the server's own federation policy (GET|PUT /v1/admin/federation/policy).
-- One row; the document is the policy as the admin API shows it (JSON).
CREATE TABLE fed_policy (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    document   TEXT NOT NULL,
    updated_at BIGINT NOT NULL                   -- unix ms
);
