-- One active worker: whoever holds this row's unexpired lease. The epoch grows by one each time
-- another process takes it; every chain action checks holder and epoch in the transaction that
-- records it, so a worker that lost the lease (frozen, partitioned) cannot sign or send.
CREATE TABLE worker_lease (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    holder     text NOT NULL,                     -- host:pid of the process
    site       text NOT NULL,                     -- host and STATE_DIR: a restarted worker there takes it at once
    epoch      bigint NOT NULL CHECK (epoch > 0),
    expires_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);
