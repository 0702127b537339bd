package jsonx

import (
	"encoding/json"
	"testing"
)

func TestMarshalDoesNotEscapeHTML(t *testing.T) {
	t.Parallel()
	raw := json.RawMessage(`{"title":"<b> & </b>"}`)
	b, err := Marshal(struct {
		Text  string          `json:"text"`
		Event json.RawMessage `json:"event"`
	}{`<script> & "quotes"`, raw})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"text":"<script> & \"quotes\"","event":{"title":"<b> & </b>"}}`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
}
