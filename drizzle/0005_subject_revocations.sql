CREATE TABLE `subject_revocations` (
	`namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	`subject` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
	`subject_hash` binary(32) NOT NULL,
	`generation` bigint unsigned NOT NULL,
	`keep_id_hash` binary(32),
	`revoked_at` datetime(3) NOT NULL,
	`pending` tinyint unsigned NOT NULL,
	CONSTRAINT `subject_revocations_pk` PRIMARY KEY(`namespace`,`subject`),
	CONSTRAINT `subject_revocations_hash_idx` UNIQUE(`namespace`,`subject_hash`)
);
--> statement-breakpoint
ALTER TABLE `cache_outbox` MODIFY COLUMN `action` enum('invalidate','tombstone','clear','mark') NOT NULL;--> statement-breakpoint
ALTER TABLE `sessions` ADD `subject_generation` bigint unsigned DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `subject_revocations_pending_idx` ON `subject_revocations` (`pending`);--> statement-breakpoint
CREATE INDEX `sessions_subject_live_idx` ON `sessions` (`namespace`,`subject`,`last_seen_at`,`id_hash`,`state`,`subject_generation`,`idle_expires_at`,`absolute_expires_at`);--> statement-breakpoint
DROP INDEX `sessions_subject_idx` ON `sessions`;