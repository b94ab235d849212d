package jobsdb

import (
	"fmt"
	"time"
)

// nullTime scans a DATETIME column whether or not the pool parses times (parseTime): as
// time.Time, or as text read in the local zone (Open's loc=Local). NULL leaves Valid false.
type nullTime struct {
	Time  time.Time
	Valid bool
}

// dateTimeLayout reads MySQL's DATETIME text with any fraction.
const dateTimeLayout = "2006-01-02 15:04:05.999999999"

func (n *nullTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		n.Time, n.Valid = time.Time{}, false
	case time.Time:
		n.Time, n.Valid = v, true
	case []byte:
		return n.Scan(string(v))
	case string:
		t, err := time.ParseInLocation(dateTimeLayout, v, time.Local)
		if err != nil {
			return fmt.Errorf("read datetime %q: %w", v, err)
		}
		n.Time, n.Valid = t, true
	default:
		return fmt.Errorf("read datetime: unexpected %T", src)
	}
	return nil
}

// ptr is the time as a pointer, nil when NULL.
func (n nullTime) ptr() *time.Time {
	if !n.Valid {
		return nil
	}
	t := n.Time
	return &t
}
