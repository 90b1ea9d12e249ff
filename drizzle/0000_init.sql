CREATE TABLE `sessions` (
	`namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`id_hash` binary(32) NOT NULL,
	`subject` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`data` json NOT NULL,
	`version` bigint unsigned NOT NULL DEFAULT 1,
	`state` enum('active','revoked') NOT NULL DEFAULT 'active',
	`idle_timeout_seconds` int unsigned NOT NULL,
	`created_at` datetime(3) NOT NULL,
	`last_seen_at` datetime(3) NOT NULL,
	`idle_expires_at` datetime(3) NOT NULL,
	`absolute_expires_at` datetime(3) NOT NULL,
	`metadata` json,
	CONSTRAINT `sessions_pk` PRIMARY KEY(`namespace`,`id_hash`)
);
--> statement-breakpoint
CREATE INDEX `sessions_subject_idx` ON `sessions` (`namespace`,`subject`);--> statement-breakpoint
CREATE INDEX `sessions_idle_expires_idx` ON `sessions` (`idle_expires_at`);