-- The seed's Phase 4 migration exactly as hand-written in
-- phase4-favorites-priority-migration.md ("Schema Added" and "Indexes Added"), for comparison:
-- a nullable ADD COLUMN ... DEFAULT 10, a validating ADD CONSTRAINT ... FOREIGN KEY and three
-- plain CREATE INDEX. `favmigrate demo` and the benchmark send it as one query, as a SQL editor
-- does, so it runs in one implicit transaction.

-- Column 1: Preferred mechanic (nullable)
ALTER TABLE public.session_requests
ADD COLUMN IF NOT EXISTS preferred_mechanic_id UUID;

-- Column 2: Priority window duration (not null, default 10)
ALTER TABLE public.session_requests
ADD COLUMN IF NOT EXISTS priority_window_minutes INTEGER DEFAULT 10;

-- Column 3: Notification timestamp (nullable)
ALTER TABLE public.session_requests
ADD COLUMN IF NOT EXISTS priority_notified_at TIMESTAMPTZ;

-- Foreign key constraint
ALTER TABLE public.session_requests
ADD CONSTRAINT session_requests_preferred_mechanic_id_fkey
FOREIGN KEY (preferred_mechanic_id)
REFERENCES public.mechanics(id)
ON DELETE SET NULL;

-- Index 1: Filter by preferred mechanic
CREATE INDEX session_requests_preferred_mechanic_idx
ON session_requests(preferred_mechanic_id)
WHERE preferred_mechanic_id IS NOT NULL;

-- Index 2: Priority analytics (composite index)
CREATE INDEX session_requests_priority_analytics_idx
ON session_requests(preferred_mechanic_id, priority_notified_at, status)
WHERE preferred_mechanic_id IS NOT NULL;

-- Index 3: Priority timeout detection
CREATE INDEX session_requests_priority_timeout_idx
ON session_requests(priority_notified_at, status)
WHERE priority_notified_at IS NOT NULL AND status = 'pending';
