-- The sample pipeline of the jetjobs demo: DataJoint's subject -> session -> analysis, as DataJoint
-- declares it (see the README). 8 subjects with 20 sessions each: 160 keys for __analysis.
--
-- Load it into an empty database of your choice (`make demo` and docker-compose.yml do):
--   mysql -e 'CREATE DATABASE jetjobs_demo' && mysql jetjobs_demo < demo/pipeline.sql
-- It runs on MySQL 8.0+ and MariaDB 10.3+, and loading it again changes nothing.

-- Manual table: one row per subject.
CREATE TABLE IF NOT EXISTS subject (
  subject_id int NOT NULL,
  PRIMARY KEY (subject_id)
) ENGINE=InnoDB;

-- Manual table: the sessions recorded for each subject.
CREATE TABLE IF NOT EXISTS session (
  subject_id int NOT NULL,
  session_id int NOT NULL,
  PRIMARY KEY (subject_id, session_id),
  FOREIGN KEY (subject_id) REFERENCES subject (subject_id) ON UPDATE CASCADE
) ENGINE=InnoDB;

-- Computed table (DataJoint's two leading underscores): one result per session, computed by
-- demo/analysis.sh. Its key source is its primary parent, session; its jobs table, which the
-- scheduler creates, is `~~analysis`.
CREATE TABLE IF NOT EXISTS __analysis (
  subject_id int NOT NULL,
  session_id int NOT NULL,
  result float NOT NULL,
  PRIMARY KEY (subject_id, session_id),
  FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id) ON UPDATE CASCADE
) ENGINE=InnoDB;

INSERT IGNORE INTO subject (subject_id)
  WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8)
  SELECT i FROM n;

INSERT IGNORE INTO session (subject_id, session_id)
  WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
  SELECT subject.subject_id, n.i FROM subject CROSS JOIN n;
