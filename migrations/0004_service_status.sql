-- What each process reports about its dependencies (e.g. the worker's RPC breaker), so the
-- bot and `dr.py status` can tell users and operators without calling the RPC themselves.
CREATE TABLE service_status (
    name       text PRIMARY KEY,                  -- e.g. 'rpc'
    status     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
