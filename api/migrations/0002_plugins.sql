-- Plugins: an admin catalogue of exact plugin builds, and which of them each
-- server has. Same portability rules as 0001.

CREATE TABLE plugins (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    download_url TEXT NOT NULL,
    -- lower-case hex; at least one of the two is set (checked by the API).
    sha256 TEXT,
    sha512 TEXT,
    -- JSON array of Minecraft versions it supports; empty = any.
    minecraft_versions_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE server_plugins (
    server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    -- One version of a plugin per server: installing another replaces it.
    plugin_name TEXT NOT NULL,
    plugin_id TEXT NOT NULL REFERENCES plugins (id),
    installed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (server_id, plugin_name)
);

CREATE INDEX server_plugins_plugin ON server_plugins (plugin_id);
