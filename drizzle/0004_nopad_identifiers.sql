ALTER TABLE `cache_outbox` MODIFY COLUMN `namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL;--> statement-breakpoint
ALTER TABLE `destroyed_tokens` MODIFY COLUMN `namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL;--> statement-breakpoint
ALTER TABLE `sessions` MODIFY COLUMN `namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL;--> statement-breakpoint
ALTER TABLE `sessions` MODIFY COLUMN `subject` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;