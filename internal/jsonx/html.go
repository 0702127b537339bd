package jsonx

import "bytes"

// UnescapeHTML returns doc, a JSON document, with every \u003c, \u003e and
// \u0026 escape inside its strings written as "<", ">" and "&". Marshal
// never writes these escapes, but JSON that scanwire passes on without
// re-encoding it (event data, structured events stored by older versions)
// may carry them: a Go scanner's json.Marshal writes them. The document
// means the same before and after, so a signature over the result is a
// signature over what the sender meant.
//
// Everything else is kept byte for byte, including an escaped backslash
// followed by "u003c" (the text \u003c). doc need not be valid JSON; the
// result may share doc's memory.
func UnescapeHTML(doc []byte) []byte {
	if !bytes.Contains(doc, []byte(`\u00`)) {
		return doc
	}
	out := make([]byte, 0, len(doc))
	inString := false
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		switch {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			if i+5 < len(doc) && doc[i+1] == 'u' && doc[i+2] == '0' && doc[i+3] == '0' {
				if r := htmlChar(doc[i+4], doc[i+5]); r != 0 {
					out = append(out, r)
					i += 5
					continue
				}
			}
			// Any other escape is copied whole, so that the escaped
			// character (a quote, a backslash) is not read as itself.
			out = append(out, c)
			if i+1 < len(doc) {
				i++
				out = append(out, doc[i])
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// htmlChar is the character of the escape \u00<hi><lo> when it is one
// that json.Marshal escapes for HTML, else 0.
func htmlChar(hi, lo byte) byte {
	switch {
	case hi == '3' && (lo == 'c' || lo == 'C'):
		return '<'
	case hi == '3' && (lo == 'e' || lo == 'E'):
		return '>'
	case hi == '2' && lo == '6':
		return '&'
	}
	return 0
}
