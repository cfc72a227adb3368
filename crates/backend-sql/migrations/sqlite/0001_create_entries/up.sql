-- One row per cached key. `__TABLE__` is replaced by the validated table name.
-- A row with a NULL value holds only a claim. Times are UTC milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS "__TABLE__" (
    namespace   TEXT    NOT NULL,
    function_id TEXT    NOT NULL,
    arg_hash    TEXT    NOT NULL,
    value       BLOB,
    stored_at   INTEGER NOT NULL DEFAULT 0,
    claim_until INTEGER,
    claim_token TEXT,
    PRIMARY KEY (namespace, function_id, arg_hash)
);
