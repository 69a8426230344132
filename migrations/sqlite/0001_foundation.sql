-- The foundation schema: every table docker-watcher keeps. Forward-only: later changes go in new
-- files. Times are RFC 3339 UTC strings with millisecond precision ('2026-01-02T03:04:05.678Z'),
-- so they sort lexically and read well in the sqlite3 shell.

-- One row: this installation's identity, the label put on every container it manages.
CREATE TABLE installation (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    id          TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Named secrets generated once (the webhook token when not configured, ...).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- API tokens are stored as SHA-256 hashes: the token itself is shown once and never kept.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

-- Sessions are stored as SHA-256 hashes of the cookie value.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

CREATE TABLE projects (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    image                  TEXT NOT NULL,
    registry_username      TEXT,
    -- Sealed with the installation's secret key (XChaCha20-Poly1305); never returned by the API.
    registry_password_enc  BLOB,
    insecure_registry      INTEGER NOT NULL DEFAULT 0,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);

CREATE TABLE stages (
    id                   INTEGER PRIMARY KEY,
    project_id           INTEGER NOT NULL REFERENCES projects(id),
    name                 TEXT NOT NULL,
    tag_policy           TEXT NOT NULL,
    schedule             TEXT,
    auto_deploy          INTEGER NOT NULL DEFAULT 1,
    hostname             TEXT,
    max_instances        INTEGER NOT NULL DEFAULT 10,
    min_release_age      TEXT,
    -- The container spec as JSON: port, env, command, health_check, min_ready_seconds, memory_mb, cpus.
    container            TEXT NOT NULL,
    current_instance_id  INTEGER,
    available_tag        TEXT,
    available_digest     TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX stages_project ON stages(project_id);

CREATE TABLE instances (
    id              INTEGER PRIMARY KEY,
    project_id      INTEGER NOT NULL REFERENCES projects(id),
    stage_id        INTEGER NOT NULL REFERENCES stages(id),
    image_tag       TEXT NOT NULL,
    image_digest    TEXT,
    container_id    TEXT,
    container_name  TEXT,
    status          TEXT NOT NULL CHECK (status IN
                      ('pending', 'deploying', 'running', 'stopped', 'failed', 'missing', 'removing')),
    host_port       INTEGER,
    hostname        TEXT,
    exit_code       INTEGER,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    -- The last time the instance was seen running (deploy, Docker start event, reconcile, scan).
    last_alive_at   TEXT,
    stopped_at      TEXT,
    -- When the stale scanner marked it stale; cleared when it is seen alive again.
    stale_since     TEXT
);
-- Lists are newest first (ORDER BY id DESC): each filter's index ends in id so a page is a walk
-- down one index range, never a sort.
CREATE INDEX instances_stage ON instances(stage_id, id);
CREATE INDEX instances_project ON instances(project_id, id);
CREATE INDEX instances_status ON instances(status, id);
CREATE UNIQUE INDEX instances_container ON instances(container_id) WHERE container_id IS NOT NULL;

CREATE TABLE deployments (
    id            INTEGER PRIMARY KEY,
    -- A deployment is the history of its stage: it goes when the stage goes (a stage can only be
    -- deleted once its instances are gone, so no running container loses its record).
    stage_id      INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    instance_id   INTEGER,
    image_tag     TEXT NOT NULL,
    image_digest  TEXT,
    trigger       TEXT NOT NULL CHECK (trigger IN ('poll', 'webhook', 'manual', 'rollback')),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error         TEXT,
    actor         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX deployments_stage ON deployments(stage_id, id);

-- Digests whose deploy failed: automatic deploys skip them, across restarts.
CREATE TABLE failed_digests (
    stage_id   INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    digest     TEXT NOT NULL,
    image_tag  TEXT NOT NULL,
    error      TEXT,
    failed_at  TEXT NOT NULL,
    PRIMARY KEY (stage_id, digest)
);

CREATE TABLE standalone_proxies (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    hostname       TEXT NOT NULL UNIQUE,
    target_url     TEXT NOT NULL,
    preserve_host  INTEGER NOT NULL DEFAULT 0,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- Every routed hostname, whoever owns it, so uniqueness across stages, instances and standalone
-- proxies is one UNIQUE constraint instead of three racy look-ups.
CREATE TABLE hostname_claims (
    hostname    TEXT PRIMARY KEY,
    owner_kind  TEXT NOT NULL CHECK (owner_kind IN ('stage', 'instance', 'proxy')),
    owner_id    INTEGER NOT NULL,
    UNIQUE (owner_kind, owner_id)
);

-- Typed settings, validated by domain::settings; the value is JSON.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE event_log (
    id           INTEGER PRIMARY KEY,
    ts           TEXT NOT NULL,
    severity     TEXT NOT NULL CHECK (severity IN ('debug', 'info', 'warn', 'error')),
    source       TEXT NOT NULL CHECK (source IN
                   ('poller', 'deployer', 'docker', 'proxy', 'stale', 'api', 'auth', 'system')),
    message      TEXT NOT NULL,
    project_id   INTEGER,
    stage_id     INTEGER,
    instance_id  INTEGER,
    details      TEXT NOT NULL DEFAULT '{}'
);
-- The event log is read newest first, ORDER BY ts DESC, id DESC, in pages of up to 500 with an
-- exact total; SPEC §9 wants such a page within 20 ms with a million rows. Two rules make that hold:
--
-- 1. Pages never sort. A filter is a set of (severity, source) pairs, optionally within one
--    project; each pair is one range of an index that ends in ts (and, implicitly, the rowid), so
--    the store asks for one range per pair and lets SQLite merge them (UNION ALL ... ORDER BY
--    runs as a lazy merge of already-sorted ranges). A time window narrows each range.
-- 2. Totals never count rows when they need not: event_counts keeps how many rows there are per
--    (severity, source, project), maintained by triggers in the writing transaction, so the total
--    of a filter without a time window adds at most 32 rows per project. With a time window the
--    store counts index entries: inside the window, or outside it (total minus both sides),
--    whichever is smaller.
CREATE INDEX event_log_kind ON event_log(severity, source, ts);
CREATE INDEX event_log_project ON event_log(project_id, severity, source, ts);
-- Unfiltered pages, time windows, and pruning by age.
CREATE INDEX event_log_ts ON event_log(ts);

-- Row counts of event_log per (severity, source, project); project_id 0 stands for "none", since
-- NULLs never conflict in a primary key and so could not be upserted.
CREATE TABLE event_counts (
    severity    TEXT NOT NULL,
    source      TEXT NOT NULL,
    project_id  INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (severity, source, project_id)
) WITHOUT ROWID;

CREATE TRIGGER event_log_counted_on_insert AFTER INSERT ON event_log
BEGIN
    INSERT INTO event_counts (severity, source, project_id, n)
    VALUES (NEW.severity, NEW.source, coalesce(NEW.project_id, 0), 1)
    ON CONFLICT (severity, source, project_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER event_log_counted_on_delete AFTER DELETE ON event_log
BEGIN
    UPDATE event_counts SET n = n - 1
    WHERE severity = OLD.severity AND source = OLD.source AND project_id = coalesce(OLD.project_id, 0);
END;

-- Events are never edited, but a hand-made fix in the sqlite3 shell must not skew the totals.
CREATE TRIGGER event_log_counted_on_update AFTER UPDATE OF severity, source, project_id ON event_log
BEGIN
    UPDATE event_counts SET n = n - 1
    WHERE severity = OLD.severity AND source = OLD.source AND project_id = coalesce(OLD.project_id, 0);
    INSERT INTO event_counts (severity, source, project_id, n)
    VALUES (NEW.severity, NEW.source, coalesce(NEW.project_id, 0), 1)
    ON CONFLICT (severity, source, project_id) DO UPDATE SET n = n + 1;
END;
