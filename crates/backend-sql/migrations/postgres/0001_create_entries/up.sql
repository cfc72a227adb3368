-- One row per cached key. `__TABLE__` is replaced by the validated table name.
-- A row with a NULL value holds only a claim. Times are UTC milliseconds since the Unix epoch.
-- Key columns use the "C" collation: equality and order are those of the bytes.
CREATE TABLE IF NOT EXISTS "__TABLE__" (
    namespace   VARCHAR(64)  COLLATE "C" NOT NULL,
    function_id VARCHAR(256) COLLATE "C" NOT NULL,
    arg_hash    VARCHAR(64)  COLLATE "C" NOT NULL,
    value       BYTEA,
    stored_at   BIGINT NOT NULL DEFAULT 0,
    claim_until BIGINT,
    claim_token VARCHAR(64),
    PRIMARY KEY (namespace, function_id, arg_hash)
);
