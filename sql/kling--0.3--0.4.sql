-- kling--0.3--0.4.sql: pending tasks are taken in turns across their
-- owners, fewest in flight first, found through indexes of their own.

\echo Use "ALTER EXTENSION kling UPDATE TO '0.4'" to load this file. \quit

CREATE INDEX kling_tasks_send_owner_idx ON kling_tasks (owner, id)
    WHERE status = 'pending';
CREATE INDEX kling_tasks_owner_in_flight_idx ON kling_tasks (owner)
    WHERE status IN ('submitting', 'queued', 'generating');
