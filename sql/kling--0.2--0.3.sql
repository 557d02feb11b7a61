-- kling--0.2--0.3.sql: an index for the active limit's count of cancelled tasks

\echo Use "ALTER EXTENSION kling UPDATE TO '0.3'" to load this file. \quit

-- A task cancelled after it reached the provider still counts against the
-- active limit for a while (the provider goes on making it).
CREATE INDEX kling_tasks_owner_cancelled_idx ON kling_tasks (owner, submitted_at)
    WHERE status = 'cancelled';
