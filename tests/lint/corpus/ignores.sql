-- Ignore comments: squawk's form before a statement and inside one, and favmigrate's own form.
SET lock_timeout = '2s';
SET statement_timeout = '10s';

-- squawk-ignore ban-drop-column, renaming-column
ALTER TABLE orders DROP COLUMN IF EXISTS legacy_a;

ALTER TABLE orders DROP COLUMN IF EXISTS legacy_b;

ALTER TABLE orders
    -- squawk-ignore ban-drop-column
    DROP COLUMN IF EXISTS legacy_c;

-- squawk-ignore
ALTER TABLE orders RENAME COLUMN total TO amount;

-- favmigrate:ignore renaming-table
ALTER TABLE orders RENAME TO purchases;
