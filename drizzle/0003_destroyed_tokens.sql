CREATE TABLE `destroyed_tokens` (
	`namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`id_hash` binary(32) NOT NULL,
	`expires_at` datetime(3) NOT NULL,
	CONSTRAINT `destroyed_tokens_pk` PRIMARY KEY(`namespace`,`id_hash`)
);
--> statement-breakpoint
ALTER TABLE `cache_outbox` MODIFY COLUMN `action` enum('invalidate','tombstone','clear') NOT NULL;--> statement-breakpoint
CREATE INDEX `destroyed_tokens_expires_idx` ON `destroyed_tokens` (`expires_at`);