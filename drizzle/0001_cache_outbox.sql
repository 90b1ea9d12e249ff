CREATE TABLE `cache_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`namespace` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`id_hash` binary(32) NOT NULL,
	`action` enum('invalidate','tombstone') NOT NULL,
	`created_at` datetime(3) NOT NULL,
	CONSTRAINT `cache_outbox_id` PRIMARY KEY(`id`)
);
