-- Workloads (SPEC §3 "Workloads"): what a stage runs beyond one stateless container — secrets,
-- a deploy strategy, hooks, accessories — and the revision counter that says when a running
-- container no longer matches its stage's configuration.

-- How a stage replaces its instance: start the new one first (the default), or stop the old one
-- first while the proxy holds the stage's requests.
ALTER TABLE stages ADD COLUMN strategy TEXT NOT NULL DEFAULT 'start_first'
    CHECK (strategy IN ('start_first', 'stop_first'));
-- The stage's hooks as JSON: {"pre_deploy": {"command": [...], "timeout_seconds": N} | null,
-- "post_deploy": ... | null}.
ALTER TABLE stages ADD COLUMN hooks TEXT NOT NULL DEFAULT '{}';
-- Bumped whenever the container spec, the secrets, the hooks or the strategy change. An instance
-- records the revision it was created with; a current instance with an older one is out of date.
ALTER TABLE stages ADD COLUMN config_revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE instances ADD COLUMN config_revision INTEGER NOT NULL DEFAULT 1;
-- The secret values an instance's container was given, sealed together as one JSON object: its
-- logs are masked with them even after the stage's secrets changed.
ALTER TABLE instances ADD COLUMN secret_env_enc BLOB;

-- Secret environment variables of a stage, each value sealed with the installation's key
-- (XChaCha20-Poly1305, like registry passwords). The API never returns a value, only the keys.
CREATE TABLE stage_secrets (
    stage_id   INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value_enc  BLOB NOT NULL,
    PRIMARY KEY (stage_id, key)
) WITHOUT ROWID;

-- Accessories: a project's long-running companions (a database, a cache), from a fixed image,
-- reachable on the project's network under their name. Started, stopped, restarted and upgraded
-- only by explicit action; never stale while defined.
CREATE TABLE accessories (
    id                 INTEGER PRIMARY KEY,
    project_id         INTEGER NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    image              TEXT NOT NULL,
    -- JSON: env, volumes, command, port.
    spec               TEXT NOT NULL,
    config_revision    INTEGER NOT NULL DEFAULT 1,
    -- The revision the current container was created with (null: no container yet).
    container_revision INTEGER,
    container_id       TEXT,
    container_name     TEXT,
    image_id           TEXT,
    status             TEXT NOT NULL CHECK (status IN
                         ('pending', 'starting', 'running', 'stopped', 'failed', 'missing', 'removing')),
    host_port          INTEGER,
    exit_code          INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    started_at         TEXT,
    stopped_at         TEXT,
    last_alive_at      TEXT,
    UNIQUE (project_id, name)
);
CREATE INDEX accessories_project ON accessories(project_id, id);
CREATE UNIQUE INDEX accessories_container ON accessories(container_id) WHERE container_id IS NOT NULL;

CREATE TABLE accessory_secrets (
    accessory_id  INTEGER NOT NULL REFERENCES accessories(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value_enc     BLOB NOT NULL,
    PRIMARY KEY (accessory_id, key)
) WITHOUT ROWID;

-- Deployments: the trigger `config` (a redeploy of the running digest after a configuration
-- change) and the output of the deployment's hooks (the last 64 KiB). SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt; nothing references it.
CREATE TABLE deployments_new (
    id            INTEGER PRIMARY KEY,
    stage_id      INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    instance_id   INTEGER,
    image_tag     TEXT NOT NULL,
    image_digest  TEXT,
    trigger       TEXT NOT NULL CHECK (trigger IN ('poll', 'webhook', 'manual', 'rollback', 'config')),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error         TEXT,
    actor         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    hook_output   TEXT
);
INSERT INTO deployments_new (id, stage_id, instance_id, image_tag, image_digest, trigger, status, error,
                             actor, started_at, finished_at)
    SELECT id, stage_id, instance_id, image_tag, image_digest, trigger, status, error, actor, started_at,
           finished_at
    FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_stage ON deployments(stage_id, id);
