-- Notifications (SPEC §3 "Notifications"): channels an admin defines, the outbox of messages
-- waiting to be delivered (persisted, so a restart loses nothing queued), and the delivery log.

CREATE TABLE notification_channels (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('webhook', 'slack', 'discord', 'ntfy', 'gotify', 'email')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    -- The kind's settings that are not secret, as JSON (an SMTP host, an ntfy priority).
    settings     TEXT NOT NULL DEFAULT '{}',
    -- The kind's secrets (URLs with tokens, passwords, signing secrets) as one JSON object sealed
    -- with the installation's secret key; never returned by the API.
    secrets_enc  BLOB,
    -- The names of the secrets that are set, so the API can say which without opening them.
    secret_keys  TEXT NOT NULL DEFAULT '[]',
    -- Which events the channel forwards, as JSON: min_severity, sources, project_ids, kinds.
    rule         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- One row per message waiting for delivery: one event, or a burst of events coalesced into one
-- message. A row is deleted when delivered or given up; `due_at` is when the next attempt may
-- run (retries back off exponentially).
CREATE TABLE notification_outbox (
    id          INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    -- The events of the message as a JSON array, as they were published (at most the first 100
    -- of a burst), and how many the burst had.
    events       TEXT NOT NULL,
    event_count  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- 1 while an attempt runs; every claim is let go when docker-watcher starts.
    claimed     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    due_at      TEXT NOT NULL,
    last_error  TEXT
);
CREATE INDEX notification_outbox_due ON notification_outbox(claimed, due_at, id);
CREATE INDEX notification_outbox_channel ON notification_outbox(channel_id);

-- The delivery log: every attempt, the last 100 per channel (older ones are pruned as new ones
-- are written).
CREATE TABLE notification_deliveries (
    id           INTEGER PRIMARY KEY,
    channel_id   INTEGER NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    at           TEXT NOT NULL,
    -- delivered; retrying (failed, will be tried again); failed (given up, or a test that failed)
    status       TEXT NOT NULL CHECK (status IN ('delivered', 'retrying', 'failed')),
    is_test      INTEGER NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL,
    event_count  INTEGER NOT NULL,
    summary      TEXT NOT NULL,
    http_status  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL
);
CREATE INDEX notification_deliveries_channel ON notification_deliveries(channel_id, id);
