-- Backups of a server's data directory, restores of them, and each server's
-- retention. Same portability rules as 0001. No foreign key to `servers`:
-- locked backups may outlive their server, and the job rows are written by
-- background tasks that must not fail because a server was deleted meanwhile.

CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    -- manual | safety (taken by a restore before it replaces the data)
    kind TEXT NOT NULL,
    -- queued | running | succeeded | failed
    status TEXT NOT NULL,
    -- 0 or 1: locked backups survive retention and deletes.
    locked BIGINT NOT NULL,
    note TEXT,
    -- The archive's key in the object store, once uploaded.
    object_key TEXT,
    size_bytes BIGINT,
    -- lower-case hex SHA-256 of the archive, checked again before a restore.
    sha256 TEXT,
    error TEXT,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT
);

-- Lists and retention are `WHERE tenant_id = ? AND server_id = ? ORDER BY id`.
CREATE INDEX backups_server ON backups (server_id, id);

CREATE TABLE restores (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    -- queued | running | succeeded | failed
    status TEXT NOT NULL,
    -- The backup of the data as it was before the restore.
    safety_backup_id TEXT,
    error TEXT,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT
);

CREATE INDEX restores_server ON restores (server_id, id);

-- Retention per server; servers without a row use the configured default.
CREATE TABLE backup_policies (
    server_id TEXT PRIMARY KEY,
    -- Keep the newest N succeeded unlocked backups; 0 = keep every backup.
    keep_last BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
