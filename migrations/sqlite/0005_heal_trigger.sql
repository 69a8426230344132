-- Deployments: the trigger `heal` — a stage bringing itself back after its current container was
-- removed outside docker-watcher (`docker rm -f`, an engine restart that lost it). SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt; nothing references it.
CREATE TABLE deployments_new (
    id            INTEGER PRIMARY KEY,
    stage_id      INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    instance_id   INTEGER,
    image_tag     TEXT NOT NULL,
    image_digest  TEXT,
    trigger       TEXT NOT NULL CHECK (trigger IN ('poll', 'webhook', 'manual', 'rollback', 'config', 'heal')),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error         TEXT,
    actor         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    hook_output   TEXT
);
INSERT INTO deployments_new (id, stage_id, instance_id, image_tag, image_digest, trigger, status, error,
                             actor, started_at, finished_at, hook_output)
    SELECT id, stage_id, instance_id, image_tag, image_digest, trigger, status, error, actor, started_at,
           finished_at, hook_output
    FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_stage ON deployments(stage_id, id);
