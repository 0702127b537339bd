package delivery

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfterClamps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"soon", 0},
		{"-5", 0},
		{"0", minRetryAfter},
		{"30", 30 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"3600", time.Hour},
		{"86400", maxRetryAfter},
		// Would overflow a time.Duration if multiplied first.
		{"9223372036", maxRetryAfter},
		{"18446744073709551615", maxRetryAfter},
		{"99999999999999999999999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), minRetryAfter},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("Retry-After %q: %s, want %s", tt.in, got, tt.want)
		}
	}
}
