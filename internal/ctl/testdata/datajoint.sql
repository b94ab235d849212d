-- The pipeline Subject -> Session -> Analysis (Computed) exactly as DataJoint 2.x declares it on
-- MariaDB, from /work/shared/reference/datajoint-ddl.txt (SHOW CREATE TABLE), including the jobs
-- table `~~analysis` that DataJoint declares lazily: DataJoint's columns only, no jetjobs columns.
CREATE TABLE `subject` (
  `subject_id` int(11) NOT NULL,
  PRIMARY KEY (`subject_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `session` (
  `subject_id` int(11) NOT NULL,
  `session_id` int(11) NOT NULL,
  PRIMARY KEY (`subject_id`,`session_id`),
  CONSTRAINT `session_ibfk_1` FOREIGN KEY (`subject_id`) REFERENCES `subject` (`subject_id`) ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `__analysis` (
  `subject_id` int(11) NOT NULL,
  `session_id` int(11) NOT NULL,
  `result` float NOT NULL,
  PRIMARY KEY (`subject_id`,`session_id`),
  CONSTRAINT `__analysis_ibfk_1` FOREIGN KEY (`subject_id`, `session_id`) REFERENCES `session` (`subject_id`, `session_id`) ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `~~analysis` (
  `subject_id` int(11) NOT NULL,
  `session_id` int(11) NOT NULL,
  `status` enum('pending','reserved','success','error','ignore') NOT NULL COMMENT ':enum(''pending'', ''reserved'', ''success'', ''error'', ''ignore''):',
  `priority` tinyint(4) NOT NULL COMMENT ':int8:',
  `created_time` datetime(3) NOT NULL DEFAULT current_timestamp(3) COMMENT ':datetime(3):',
  `scheduled_time` datetime(3) NOT NULL DEFAULT current_timestamp(3) COMMENT ':datetime(3):',
  `reserved_time` datetime(3) DEFAULT NULL COMMENT ':datetime(3):',
  `completed_time` datetime(3) DEFAULT NULL COMMENT ':datetime(3):',
  `duration` double DEFAULT NULL COMMENT ':float64:',
  `error_message` varchar(2047) NOT NULL DEFAULT '' COMMENT ':varchar(2047):',
  `error_stack` longblob DEFAULT NULL COMMENT ':<blob>:',
  `user` varchar(255) NOT NULL DEFAULT '' COMMENT ':varchar(255):',
  `host` varchar(255) NOT NULL DEFAULT '' COMMENT ':varchar(255):',
  `pid` int(11) NOT NULL DEFAULT 0 COMMENT ':int32:',
  `connection_id` bigint(20) NOT NULL DEFAULT 0 COMMENT ':int64:',
  `version` varchar(64) NOT NULL DEFAULT '' COMMENT ':varchar(64):',
  PRIMARY KEY (`subject_id`,`session_id`),
  KEY `status` (`status`,`priority`,`scheduled_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci COMMENT='Job queue for `djpeer`.`__analysis`';

-- A second pipeline keyed by a string, for injection attempts through --key.
CREATE TABLE `person` (
  `name` varchar(64) NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

CREATE TABLE `__greeting` (
  `name` varchar(64) NOT NULL,
  `text` varchar(255) NOT NULL,
  PRIMARY KEY (`name`),
  CONSTRAINT `__greeting_ibfk_1` FOREIGN KEY (`name`) REFERENCES `person` (`name`) ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

INSERT INTO `subject` VALUES (1), (2), (3);
INSERT INTO `session` VALUES (1,1), (1,2), (1,3), (2,1), (2,2), (2,3), (3,1);
INSERT INTO `__analysis` VALUES (1,1,0.5);
INSERT INTO `person` VALUES ('ada'), ('bob');
