-- The backfill's own state in the favmigrate schema (created first if missing): where a run got to (written in the same
-- transaction as each batch, so it can never disagree with the data) and every reject it reported.
-- pass_xid: the first transaction id after the pass began; the main pass leaves rows written since
-- to the catch-up pass.
CREATE TABLE IF NOT EXISTS {checkpoint_table} (
    migration_id  text NOT NULL,
    target_schema text NOT NULL,
    scan          text NOT NULL,
    phase         text NOT NULL,
    position      text,
    end_position  text,
    pass_xid      bigint NOT NULL,
    counters      jsonb NOT NULL,
    options       jsonb NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (migration_id, target_schema)
);

CREATE TABLE IF NOT EXISTS {rejects_table} (
    migration_id  text NOT NULL,
    target_schema text NOT NULL,
    row_id        text NOT NULL,
    key           text NOT NULL,
    reason        text NOT NULL,
    value         jsonb,
    current_value jsonb,
    PRIMARY KEY (migration_id, target_schema, row_id, key)
);
