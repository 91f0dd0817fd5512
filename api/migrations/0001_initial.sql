-- Respawn API schema, version 1.
-- Portable across SQLite, PostgreSQL and CockroachDB: TEXT ids made by the
-- application (time-ordered, so `ORDER BY id` pages in creation order), BIGINT
-- unix milliseconds for time, no AUTOINCREMENT/SERIAL, no BOOLEAN (SQLite has no
-- real one and the Any driver maps it differently per backend), no JSON column
-- types (JSON is stored as TEXT and parsed by the application).

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- hex SHA-256 of the whole token; the token itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    cpu_millicores BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    storage_gib BIGINT NOT NULL,
    max_players BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    minecraft_type TEXT NOT NULL,
    minecraft_version TEXT NOT NULL,
    properties_json TEXT NOT NULL,
    idle_timeout_s BIGINT NOT NULL,
    min_replicas BIGINT NOT NULL,
    max_replicas BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Every tenant query is `WHERE tenant_id = ? [AND id > ?] ORDER BY id`.
CREATE INDEX servers_tenant_id ON servers (tenant_id, id);

-- One row per hostname: the primary key is what makes hostnames globally
-- unique across tenants, even under concurrent creates.
CREATE TABLE server_hostnames (
    hostname TEXT PRIMARY KEY,
    server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position BIGINT NOT NULL
);

CREATE INDEX server_hostnames_server ON server_hostnames (server_id);
