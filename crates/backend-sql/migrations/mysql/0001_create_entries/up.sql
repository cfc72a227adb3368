-- One row per cached key. `__TABLE__` is replaced by the validated table name.
-- A row with a NULL value holds only a claim. Times are UTC milliseconds since the Unix epoch.
-- Key columns are compared byte for byte: the namespace and hash are ASCII with a binary
-- collation, the function id (UTF-8, up to 256 bytes) is VARBINARY, so neither case folding nor
-- trailing-space padding can merge two keys, and the primary key is 384 bytes, well under
-- InnoDB's 3072-byte index limit.
CREATE TABLE IF NOT EXISTS `__TABLE__` (
    namespace   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    function_id VARBINARY(256) NOT NULL,
    arg_hash    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value       LONGBLOB NULL,
    stored_at   BIGINT NOT NULL DEFAULT 0,
    claim_until BIGINT NULL,
    claim_token VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    PRIMARY KEY (namespace, function_id, arg_hash)
) ENGINE = InnoDB;
