package jobsdb

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// oneColumn is a hand-built target keyed by one column of the given type.
func oneColumn(dataType, columnType string) *Target {
	return &Target{Schema: "s", Name: "t", KeyColumns: []Column{{Name: "k", DataType: dataType, ColumnType: columnType}}}
}

func TestKeyTypes(t *testing.T) {
	t.Parallel()
	type c struct {
		in   string // the JSON value of column k
		want string // its canonical JSON value; "" for a bad key
	}
	for _, tc := range []struct {
		dataType, columnType string
		cases                []c
	}{
		{"tinyint", "tinyint(4)", []c{{"127", "127"}, {"-128", "-128"}, {"128", ""}, {"-129", ""}, {`"1"`, ""}, {"1.0", ""},
			{"1e2", ""}, {"true", ""}, {"null", ""}, {"-0", "0"}}},
		{"tinyint", "tinyint(3) unsigned", []c{{"255", "255"}, {"0", "0"}, {"256", ""}, {"-1", ""}}},
		{"smallint", "smallint(6)", []c{{"-32768", "-32768"}, {"32768", ""}}},
		{"mediumint", "mediumint(8) unsigned", []c{{"16777215", "16777215"}, {"16777216", ""}}},
		{"mediumint", "mediumint(9)", []c{{"-8388608", "-8388608"}, {"8388608", ""}}},
		{"int", "int(11)", []c{{"2147483647", "2147483647"}, {"2147483648", ""}, {`"1; DROP TABLE x"`, ""}}},
		{"int", "int unsigned", []c{{"4294967295", "4294967295"}, {"4294967296", ""}}},
		{"bigint", "bigint(20)", []c{{"-9223372036854775808", "-9223372036854775808"}, {"9223372036854775807", "9223372036854775807"},
			{"9223372036854775808", ""}}},
		{"bigint", "bigint(20) unsigned", []c{{"18446744073709551615", "18446744073709551615"}, {"18446744073709551616", ""},
			{"1.8446744073709552e19", ""}}},
		{"decimal", "decimal(5,2)", []c{{"1.5", `"1.50"`}, {`"123.45"`, `"123.45"`}, {`"-999.99"`, `"-999.99"`}, {`"1000"`, ""},
			{`"1.234"`, ""}, {`"1.230"`, `"1.23"`}, {"-0", `"0.00"`}, {`"1e2"`, `"100.00"`}, {`"abc"`, ""}, {`"1/2"`, ""},
			{`"0x10"`, ""}, {`""`, ""}, {`" 1"`, ""}, {`"1e999"`, ""}}},
		{"decimal", "decimal(10,0) unsigned", []c{{`"-1"`, ""}, {"42", `"42"`}, {`"9999999999"`, `"9999999999"`}}},
		{"float", "float", []c{{"0.1", "0.1"}, {"1e39", ""}, {`"0.1"`, ""}, {"-2.5", "-2.5"}}},
		{"double", "double", []c{{"0.1", "0.1"}, {"1e308", "1e+308"}, {"1e309", ""}}},
		{"varchar", "varchar(5)", []c{{`"héllo"`, `"héllo"`}, {`"héllo!"`, ""}, {"5", ""}, {`""`, `""`},
			{`"' OR 1=1 --"`, ""}, {`"a<b>"`, `"a<b>"`}, {`"\u0000"`, `"\u0000"`}}},
		{"varchar", "varchar(64)", []c{{`"' OR 1=1 --"`, `"' OR 1=1 --"`}, {`"1; DROP TABLE x"`, `"1; DROP TABLE x"`}}},
		{"char", "char(3)", []c{{`"ab "`, `"ab"`}, {`"abcd"`, ""}}},
		{"enum", "enum('a','b''c','d\\\\e')", []c{{`"b'c"`, `"b'c"`}, {`"d\\e"`, `"d\\e"`}, {`"A"`, ""}, {`""`, ""}, {"1", ""}}},
		{"set", "set('x','y','z')", []c{{`"z,x"`, `"x,z"`}, {`"x,x"`, ""}, {`""`, `""`}, {`"w"`, ""}}},
		{"date", "date", []c{{`"2024-02-29"`, `"2024-02-29"`}, {`"2023-02-29"`, ""}, {`"2024-2-3"`, ""}, {`"0000-00-00"`, ""},
			{`"2024-01-01 00:00:00"`, ""}}},
		{"datetime", "datetime", []c{{`"2024-01-02 03:04:05"`, `"2024-01-02 03:04:05"`}, {`"2024-01-02T03:04:05"`, `"2024-01-02 03:04:05"`},
			{`"2024-01-02 03:04:05.000"`, `"2024-01-02 03:04:05"`}, {`"2024-01-02 03:04:05.5"`, ""}, {`"2024-01-02 03:04:05Z"`, ""},
			{`"2024-01-02 24:00:00"`, ""}, {`"2024-01-02"`, ""}}},
		{"datetime", "datetime(3)", []c{{`"2024-01-02 03:04:05.5"`, `"2024-01-02 03:04:05.500"`}, {`"2024-01-02 03:04:05.1234"`, ""},
			{`"2024-01-02 03:04:05.1230"`, `"2024-01-02 03:04:05.123"`}, {`"2024-01-02 03:04:05"`, `"2024-01-02 03:04:05.000"`}}},
		{"timestamp", "timestamp(6)", []c{{`"2024-01-02 03:04:05.123456"`, `"2024-01-02 03:04:05.123456"`}}},
		{"time", "time", []c{{`"-01:02:03"`, `"-01:02:03"`}, {`"838:59:59"`, `"838:59:59"`}, {`"839:00:00"`, ""}, {`"12:60:00"`, ""},
			{`"-00:00:00"`, `"00:00:00"`}, {`"1:02:03"`, `"01:02:03"`}}},
		{"year", "year(4)", []c{{"2024", "2024"}, {"1900", ""}, {"0", "0"}, {`"2024"`, ""}}},
		{"bit", "bit(3)", []c{{"7", "7"}, {"8", ""}, {"-1", ""}}},
		{"varbinary", "varbinary(4)", []c{{`"AAEC"`, `"AAEC"`}, {`"AAECAwQ="`, ""}, {`"!!"`, ""}, {`""`, `""`}, {"1", ""}}},
		{"binary", "binary(4)", []c{{`"AAE="`, `"AAEAAA=="`}, {`"AAECAw=="`, `"AAECAw=="`}}},
		{"binary", "binary(16)", []c{
			{`"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
			{`"6BA7B810-9DAD-11D1-80B4-00C04FD430C8"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
			{`"6ba7b8109dad11d180b400c04fd430c8"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
			{`"a6e4EJ2tEdGAtADAT9QwyA=="`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
			{`"6ba7b810-9dad-11d1-80b4-00c04fd430c"`, ""}, {`"6ba7b810x9dad-11d1-80b4-00c04fd430c8"`, ""}, {`"AAE="`, ""}}},
		{"uuid", "uuid", []c{{`"6BA7B8109DAD11D180B400C04FD430C8"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`}, {`"nope"`, ""}}},
	} {
		tg := oneColumn(tc.dataType, tc.columnType)
		for _, cs := range tc.cases {
			key, err := tg.ParseKey([]byte(`{"k":` + cs.in + `}`))
			if cs.want == "" {
				if !errors.Is(err, ErrBadKey) {
					t.Errorf("%s: %s accepted as %v (err %v)", tc.columnType, cs.in, key, err)
				} else if !strings.Contains(err.Error(), "s.t") || !strings.Contains(err.Error(), "column k") {
					t.Errorf("%s: %s: error %q does not name the table and column", tc.columnType, cs.in, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %s: %v", tc.columnType, cs.in, err)
				continue
			}
			got, err := tg.KeyJSON(key)
			if err != nil || string(got) != `{"k":`+cs.want+`}` {
				t.Errorf("%s: %s encodes as %s (%v), want %s", tc.columnType, cs.in, got, err, cs.want)
			}
			back, err := tg.ParseKey(got)
			if err != nil || !reflect.DeepEqual(back, key) {
				t.Errorf("%s: %s does not round trip: %v, %v", tc.columnType, got, back, err)
			}
		}
	}
}

func TestKeyUnsupportedType(t *testing.T) {
	t.Parallel()
	_, err := oneColumn("json", "longtext").ParseKey([]byte(`{"k":"x"}`))
	wantErrIs(t, err, ErrBadKey)
}

// twoColumns is keyed by (a int, b varchar(16)).
func twoColumns() *Target {
	return &Target{Schema: "s", Name: "t", KeyColumns: []Column{
		{Name: "a", DataType: "int", ColumnType: "int(11)"},
		{Name: "b", DataType: "varchar", ColumnType: "varchar(16)"},
	}}
}

func TestParseKeyStructure(t *testing.T) {
	t.Parallel()
	tg := twoColumns()
	t.Run("columns in any order give the canonical encoding", func(t *testing.T) {
		key, err := tg.ParseKey([]byte(` { "b" : "x" , "a" : 1 } `))
		if err != nil || !reflect.DeepEqual(key, Key{int64(1), "x"}) {
			t.Fatalf("key %v, %v", key, err)
		}
		if got, _ := tg.KeyJSON(key); string(got) != `{"a":1,"b":"x"}` {
			t.Fatalf("KeyJSON %s", got)
		}
	})
	for _, bad := range []string{
		``, `[1,"x"]`, `1`, `null`, `"x"`, `{}`, `{"a":1}`, `{"a":1,"b":"x","c":2}`, `{"a":1,"a":2,"b":"x"}`,
		`{"a":null,"b":"x"}`, `{"a":{"x":1},"b":"x"}`, `{"a":[1],"b":"x"}`, `{"a":1,"b":"x"} {}`, `{"a":1,"b":"x"`,
		`{"a":1,"b":"x",}`, `{"A":1,"b":"x"}`, `{"a":1,"b":"x"}x`, `{"a":1 "b":"x"}`, `{"a":1,"b":"x"}]`, `{"a":true,"b":"x"}`,
		`{"a":1,"b; DROP TABLE t":"x"}`,
	} {
		if key, err := tg.ParseKey([]byte(bad)); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s accepted as %v (%v)", bad, key, err)
		}
	}
}

func TestKeyFromStrings(t *testing.T) {
	t.Parallel()
	tg := twoColumns()
	key, err := tg.KeyFromStrings(map[string]string{"a": "-42", "b": "1; DROP TABLE t"})
	if err != nil || !reflect.DeepEqual(key, Key{int64(-42), "1; DROP TABLE t"}) {
		t.Fatalf("key %v, %v", key, err)
	}
	for _, bad := range []map[string]string{
		{"a": "4.2", "b": "x"}, {"a": "1 OR 1=1", "b": "x"}, {"a": "1"}, {"a": "1", "b": "x", "c": "y"}, {"a": "", "b": "x"},
		{"a": "1", "b": "far too long for sixteen"},
	} {
		if key, err := tg.KeyFromStrings(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("%v accepted as %v (%v)", bad, key, err)
		}
	}
	d := oneColumn("datetime", "datetime(3)")
	if key, err := d.KeyFromStrings(map[string]string{"k": "2024-01-02T03:04:05.1"}); err != nil || key[0] != "2024-01-02 03:04:05.100" {
		t.Fatalf("datetime key %v, %v", key, err)
	}
}

func TestCheckKeyAndKeyMap(t *testing.T) {
	t.Parallel()
	tg := &Target{Schema: "s", Name: "t", KeyColumns: []Column{
		{Name: "n", DataType: "bigint", ColumnType: "bigint unsigned"},
		{Name: "at", DataType: "datetime", ColumnType: "datetime(3)"},
		{Name: "id", DataType: "binary", ColumnType: "binary(16)"},
		{Name: "raw", DataType: "varbinary", ColumnType: "varbinary(8)"},
		{Name: "d", DataType: "decimal", ColumnType: "decimal(4,1)"},
	}}
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.Local)
	uuid := [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	key, err := tg.CheckKey(Key{uint(7), at, uuid, []byte{1, 2}, 2.5})
	if err != nil {
		t.Fatal(err)
	}
	want := Key{uint64(7), "2024-05-06 07:08:09.123", uuid[:], []byte{1, 2}, "2.5"}
	if !reflect.DeepEqual(key, want) {
		t.Fatalf("key %#v, want %#v", key, want)
	}
	m := tg.KeyMap(key)
	wantMap := map[string]any{"n": uint64(7), "at": "2024-05-06 07:08:09.123", "id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"raw": "AQI=", "d": "2.5"}
	if !reflect.DeepEqual(m, wantMap) {
		t.Fatalf("KeyMap %v, want %v", m, wantMap)
	}
	for _, bad := range []Key{{uint(7)}, {-1, at, uuid, []byte{}, 1}, {1, "yesterday", uuid, []byte{}, 1}, {1, at, []byte{1}, []byte{}, 1},
		{1, at, uuid, []byte("123456789"), 1}, {1, at, uuid, []byte{}, 1000}, {1, at, uuid, []byte{}, true}} {
		if _, err := tg.CheckKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("%v accepted (%v)", bad, err)
		}
	}
}

// fuzzTarget has a column of most key types.
func fuzzTarget() *Target {
	return &Target{Schema: "s", Name: "t", KeyColumns: []Column{
		{Name: "i", DataType: "tinyint", ColumnType: "tinyint(4)"},
		{Name: "u", DataType: "bigint", ColumnType: "bigint(20) unsigned"},
		{Name: "d", DataType: "decimal", ColumnType: "decimal(6,2)"},
		{Name: "s", DataType: "varchar", ColumnType: "varchar(8)"},
		{Name: "t", DataType: "datetime", ColumnType: "datetime(3)"},
		{Name: "e", DataType: "enum", ColumnType: "enum('a','b')"},
		{Name: "b", DataType: "binary", ColumnType: "binary(16)"},
		{Name: "f", DataType: "double", ColumnType: "double"},
	}}
}

// FuzzParseKey: ParseKey never panics, and every key it accepts round-trips through KeyJSON.
func FuzzParseKey(f *testing.F) {
	for _, seed := range []string{
		`{"i":1,"u":18446744073709551615,"d":"1.5","s":"x","t":"2024-01-02 03:04:05.6","e":"a","b":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","f":0.1}`,
		`{"f":-1e300,"e":"b","b":"a6e4EJ2tEdGAtADAT9QwyA==","t":"2024-01-02T03:04:05","s":"' OR 1=1","d":-3,"u":0,"i":-128}`,
		`{"i":1,"i":2}`, `[]`, `{"i":1e2}`, `{"s":"\ud800"}`, `{"d":"1e-3"}`,
	} {
		f.Add([]byte(seed))
	}
	tg := fuzzTarget()
	f.Fuzz(func(t *testing.T, data []byte) {
		if fast, ok := tg.parseKeyFast(data); ok {
			slow, err := tg.parseKeySlow(data)
			if err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s: the fast parser read %v, the decoder %v (%v)", data, fast, slow, err)
			}
		}
		key, err := tg.ParseKey(data)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v is not ErrBadKey", err)
			}
			return
		}
		enc, err := tg.KeyJSON(key)
		if err != nil {
			t.Fatalf("accepted key %v does not encode: %v", key, err)
		}
		back, err := tg.ParseKey(enc)
		if err != nil || !reflect.DeepEqual(back, key) {
			t.Fatalf("%s → %v → %s → %v (%v)", data, key, enc, back, err)
		}
		if again, _ := tg.KeyJSON(back); string(again) != string(enc) {
			t.Fatalf("KeyJSON is not canonical: %s then %s", enc, again)
		}
	})
}

// FuzzKeyFromStrings: command-line values never panic, and accepted keys round-trip.
func FuzzKeyFromStrings(f *testing.F) {
	f.Add("1", "2.50", "2024-01-02 03:04:05", "6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	f.Add("-0", "1e2", "2024-02-30 00:00:00", "AAE=")
	tg := &Target{Schema: "s", Name: "t", KeyColumns: []Column{
		{Name: "i", DataType: "int", ColumnType: "int(11)"},
		{Name: "d", DataType: "decimal", ColumnType: "decimal(6,2)"},
		{Name: "t", DataType: "datetime", ColumnType: "datetime(3)"},
		{Name: "b", DataType: "binary", ColumnType: "binary(16)"},
	}}
	f.Fuzz(func(t *testing.T, i, d, ts, b string) {
		key, err := tg.KeyFromStrings(map[string]string{"i": i, "d": d, "t": ts, "b": b})
		if err != nil {
			return
		}
		enc, err := tg.KeyJSON(key)
		if err != nil {
			t.Fatal(err)
		}
		back, err := tg.ParseKey(enc)
		if err != nil || !reflect.DeepEqual(back, key) {
			t.Fatalf("%v → %s → %v (%v)", key, enc, back, err)
		}
	})
}
