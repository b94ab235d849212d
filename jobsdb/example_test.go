package jobsdb_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// A worker's path through a jobs table: refresh, reserve what is due, run, record. (Not run:
// it needs a database.)
func Example() {
	ctx := context.Background()
	db, err := jobsdb.Open(ctx, "root@tcp(127.0.0.1:3306)/")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	target, err := jobsdb.Inspect(ctx, db, "pipeline.__analysis", "")
	if err != nil {
		log.Fatal(err)
	}
	jobs := jobsdb.New(db, target, jobsdb.Options{LeaseDuration: time.Minute})
	if _, err := jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: jobsdb.PriorityDefault, Delay: -time.Second}); err != nil {
		log.Fatal(err)
	}
	due, err := jobs.FetchPending(ctx, 100, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	keys := make([]jobsdb.Key, len(due))
	for i, j := range due {
		keys[i] = j.Key
	}
	leases, err := jobs.Reserve(ctx, keys)
	if err != nil {
		log.Fatal(err)
	}
	outcomes := make([]jobsdb.Outcome, len(leases))
	for i, l := range leases {
		start := time.Now()
		result := 42.0 // the computation
		outcomes[i] = jobsdb.Outcome{Lease: l, Kind: jobsdb.OutcomeSuccess, Duration: time.Since(start),
			Rows: []jobsdb.Row{{"result": result}}}
	}
	applied, err := jobs.Record(ctx, outcomes)
	if err != nil {
		log.Fatal(err)
	}
	for i, ok := range applied {
		if !ok {
			log.Printf("lease of %s was lost; nothing was written for it", target.KeyString(outcomes[i].Lease.Key))
		}
	}
}

func ExampleTarget_ParseKey() {
	// A target keyed by (subject_id int, recorded datetime(3)), as Inspect would read it.
	target := &jobsdb.Target{Schema: "lab", Name: "__analysis", KeyColumns: []jobsdb.Column{
		{Name: "subject_id", DataType: "int", ColumnType: "int(11)"},
		{Name: "recorded", DataType: "datetime", ColumnType: "datetime(3)"},
	}}
	key, err := target.ParseKey([]byte(`{"recorded": "2024-05-06T07:08:09.5", "subject_id": 12}`))
	fmt.Println(key, err)
	canonical, _ := target.KeyJSON(key)
	fmt.Println(string(canonical))
	_, err = target.ParseKey([]byte(`{"subject_id": "12; DROP TABLE x", "recorded": "2024-05-06 07:08:09"}`))
	fmt.Println(err)
	// Output:
	// [12 2024-05-06 07:08:09.500] <nil>
	// {"subject_id":12,"recorded":"2024-05-06 07:08:09.500"}
	// bad key for lab.__analysis: column subject_id: want an integer in -2147483648..2147483647, got the string "12; DROP TABLE x"
}

func ExampleEncodeStack() {
	blob := jobsdb.EncodeStack("KeyError: 'x'")
	fmt.Printf("%q\n", blob)
	stack, _ := jobsdb.DecodeStack(blob)
	fmt.Println(stack)
	// Output:
	// "dj0\x00\x05\r\x00\x00\x00\x00\x00\x00\x00KeyError: 'x'"
	// KeyError: 'x'
}
