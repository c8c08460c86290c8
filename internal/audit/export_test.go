package audit

import "time"

// SetClock fixes the time a Store stamps on records, for golden files.
func SetClock(s *Store, now func() time.Time) { s.now = now }
