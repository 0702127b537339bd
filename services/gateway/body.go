package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// jsonProblem words an error decoding a request body without quoting the
// body: encoding/json's syntax errors show the character they stopped at,
// which may be a character of a secret the body carries.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends too early"
	case errors.As(err, &se):
		return fmt.Sprintf("the body is not valid JSON (at byte %d)", se.Offset)
	case errors.As(err, &te) && te.Field != "":
		return fmt.Sprintf("%s must be a JSON %s", te.Field, jsonType(te.Type.Kind().String()))
	case errors.As(err, &te):
		return "the body must be a JSON object"
	}
	return err.Error() // json: unknown field "x": names the field, never a value
}

// jsonType names a Go kind as JSON calls it.
func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	}
	return "value"
}
