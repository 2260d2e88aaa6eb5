-- The backfill's own state in the favmigrate schema: where a run got to (written in the same
-- transaction as each batch, so it can never disagree with the data) and every reject it reported.
CREATE SCHEMA IF NOT EXISTS {state_schema};

CREATE TABLE IF NOT EXISTS {checkpoint_table} (
    migration_id  text NOT NULL,
    target_schema text NOT NULL,
    scan          text NOT NULL,
    phase         text NOT NULL,
    position      text,
    end_position  text,
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
