-- When each stage first saw each digest its tag policy selected (SPEC §3, `min_release_age`: a new
-- digest is deployed only once it has been seen for that long). Kept in the store so a restart
-- does not start the clock again. The poller forgets a digest once the registry no longer offers
-- it for the stage, so the table holds about one row per selected tag.
CREATE TABLE digest_first_seen (
    stage_id       INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    digest         TEXT NOT NULL,
    first_seen_at  TEXT NOT NULL,
    PRIMARY KEY (stage_id, digest)
) WITHOUT ROWID;
