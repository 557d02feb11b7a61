-- kling--0.3--0.4.sql: pending tasks are taken in turns across their
-- owners, found through an index of their own.

\echo Use "ALTER EXTENSION kling UPDATE TO '0.4'" to load this file. \quit

CREATE INDEX kling_tasks_send_owner_idx ON kling_tasks (owner, id)
    WHERE status = 'pending';
