DROP INDEX `sessions_subject_idx` ON `sessions`;--> statement-breakpoint
ALTER TABLE `sessions` ADD `rotated_to` binary(32);--> statement-breakpoint
CREATE INDEX `sessions_subject_idx` ON `sessions` (`namespace`,`subject`,`last_seen_at`);