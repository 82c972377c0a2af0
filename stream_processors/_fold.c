/* UserWindows.fold in C: the processors' per-event hot path.
 *
 * The same algorithm as UserWindows._fold_py in windows.py, which stays the
 * reference (and the fallback where this module was not built):
 * tests/unit/test_fold_c.py checks that both leave the same state for the
 * same events. Only CPython's C API is used (no dependency); every object
 * taken from an event is checked where its type matters, so bad input
 * raises an exception, never crashes.
 *
 * fold(events, wm, retention, seen_by_minute, pending, pending_orgs, canon,
 *      shared_seen) -> (counted, duplicates, late, watermark)
 *
 *   events          list of wire events (dicts)
 *   seen_by_minute  {minute: {event_id: user_id}}
 *   pending         {minute: {user_id: [7 sums, *event ids]}}
 *   pending_orgs    {minute: {org_id: [7 sums]}}
 *   canon           {user_id: user_id} (one string object per user)
 *   shared_seen     callable(minute, user_id, event_id) -> bool, for an id
 *                   already counted for another user (rare)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MINUTE_MS 60000LL

static PyObject *k_ts, *k_event_id, *k_user_id, *k_org_id, *k_input, *k_output, *k_cache_read, *k_cache_write,
    *k_cost, *one;

/* A borrowed reference to event[key], or NULL with KeyError/TypeError set. */
static PyObject *field(PyObject *event, PyObject *key) {
    PyObject *value = PyDict_GetItemWithError(event, key);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return value;
}

/* A new reference to the dict at mapping[key], made when missing. */
static PyObject *dict_at(PyObject *mapping, PyObject *key) {
    PyObject *inner = PyDict_GetItemWithError(mapping, key);
    if (inner != NULL) {
        if (!PyDict_Check(inner)) {
            PyErr_SetString(PyExc_TypeError, "fold: window state must hold dicts");
            return NULL;
        }
        Py_INCREF(inner);
        return inner;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    inner = PyDict_New();
    if (inner == NULL) {
        return NULL;
    }
    if (PyDict_SetItem(mapping, key, inner) < 0) {
        Py_DECREF(inner);
        return NULL;
    }
    return inner;
}

/* target[at + i] += values[i] for i in 0..6, each a new int object as Python's
 * += makes; target must be a list of at least at + 7 items. */
static int add_into(PyObject *target, Py_ssize_t at, PyObject *const *values) {
    if (!PyList_Check(target) || PyList_GET_SIZE(target) < at + 7) {
        PyErr_SetString(PyExc_TypeError, "fold: a bucket must be a list of at least 7 sums");
        return -1;
    }
    for (Py_ssize_t i = 0; i < 7; i++) {
        PyObject *old = PyList_GET_ITEM(target, at + i);
        PyObject *total = PyNumber_Add(old, values[i]);
        if (total == NULL) {
            return -1;
        }
        PyList_SET_ITEM(target, at + i, total);
        Py_DECREF(old);
    }
    return 0;
}

/* A new list [1, inp, out, cr, cw, total, cost] (+ event_id when given). */
static PyObject *new_bucket(PyObject *const values[7], PyObject *event_id) {
    PyObject *bucket = PyList_New(event_id != NULL ? 8 : 7);
    if (bucket == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 7; i++) {
        Py_INCREF(values[i]);
        PyList_SET_ITEM(bucket, i, values[i]);
    }
    if (event_id != NULL) {
        Py_INCREF(event_id);
        PyList_SET_ITEM(bucket, 7, event_id);
    }
    return bucket;
}

/* buckets[key] += values (a new bucket when missing); with event_id, the
 * bucket also lists the ids it counted. -> the bucket (borrowed from
 * ``buckets``), or NULL with an exception set. */
static PyObject *accumulate(PyObject *buckets, PyObject *key, PyObject *const values[7], PyObject *event_id) {
    PyObject *acc = PyDict_GetItemWithError(buckets, key);
    if (acc == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        PyObject *bucket = new_bucket(values, event_id);
        if (bucket == NULL) {
            return NULL;
        }
        int rc = PyDict_SetItem(buckets, key, bucket);
        Py_DECREF(bucket); /* the dict holds it */
        return rc < 0 ? NULL : bucket;
    }
    if (add_into(acc, 0, values) < 0 || (event_id != NULL && PyList_Append(acc, event_id) < 0)) {
        return NULL;
    }
    return acc;
}

/* Org sums of one fold() call, in C integers.
 *
 * An envelope holds hundreds of events of a few minutes and a few orgs: adding
 * each event's seven values into the org's Python bucket made seven new int
 * objects per event, most of the fold's cost. Instead, the first event of a
 * (minute, org) in a call goes into the Python bucket as before (so buckets
 * are made in the same order as by _fold_py), and the rest are summed here in
 * 64-bit integers and added to that bucket when the call ends, the table fills
 * or a sum would overflow. Only buckets of exact ints get C sums, and an event
 * whose values are not all ints that fit flushes its slot before it is added
 * in Python: integer sums are exact in any grouping, float sums are not, so
 * the result is always what _fold_py computes, value for value.
 */
#define ORG_SLOTS 64      /* a power of 2 */
#define ORG_SLOTS_MAX 40  /* flush all before the table gets fuller than this */

typedef struct {
    PyObject *org;    /* owned: the org id (a str) */
    Py_hash_t hash;
    long long minute;
    PyObject *bucket; /* owned: the Python bucket the sums are added to; NULL for a free slot */
    int exact;        /* the bucket holds exact ints only: C sums allowed */
    long long sums[7];
} org_slot;

typedef struct {
    org_slot slots[ORG_SLOTS];
    int used;
} org_table;

/* Add a slot's C sums into its Python bucket and zero them. */
static int flush_slot(org_slot *slot) {
    if (slot->sums[0] == 0) {
        return 0;
    }
    PyObject *values[7];
    int made = 0, rc = -1;
    for (; made < 7; made++) {
        if ((values[made] = PyLong_FromLongLong(slot->sums[made])) == NULL) {
            break;
        }
    }
    if (made == 7) {
        rc = add_into(slot->bucket, 0, values);
    }
    for (int i = 0; i < made; i++) {
        Py_DECREF(values[i]);
    }
    memset(slot->sums, 0, sizeof slot->sums);
    return rc;
}

/* Flush every slot and empty the table. A failure (out of memory) does not
 * stop the others from being flushed; the first exception is the one kept. */
static int flush_table(org_table *table) {
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    int rc = 0;
    for (int i = 0; i < ORG_SLOTS; i++) {
        org_slot *slot = &table->slots[i];
        if (slot->bucket == NULL) {
            continue;
        }
        if (flush_slot(slot) < 0) {
            if (rc == 0) {
                PyErr_Fetch(&type, &value, &tb);
                rc = -1;
            } else {
                PyErr_Clear();
            }
        }
        Py_CLEAR(slot->bucket);
        Py_CLEAR(slot->org);
    }
    table->used = 0;
    if (rc < 0) {
        PyErr_Restore(type, value, tb);
    }
    return rc;
}

/* The slot of (minute, org), or the free slot where it goes; ``used`` stays
 * below ORG_SLOTS, so there is always a free one. */
static org_slot *find_slot(org_table *table, long long minute, PyObject *org, Py_hash_t hash) {
    size_t i = ((size_t)hash ^ ((size_t)minute * 0x9E3779B97F4A7C15ULL)) & (ORG_SLOTS - 1);
    for (;;) {
        org_slot *slot = &table->slots[i];
        if (slot->bucket == NULL) {
            return slot;
        }
        if (slot->hash == hash && slot->minute == minute &&
            (slot->org == org || PyUnicode_Compare(slot->org, org) == 0)) {
            return slot;
        }
        i = (i + 1) & (ORG_SLOTS - 1);
    }
}

/* The event's seven values as C integers: 1 when they are all exact ints whose
 * total and each fits in 64 bits, else 0 (the Python path). */
static int values_in_c(PyObject *const values[7], long long out[7]) {
    out[0] = 1;
    for (int j = 1; j <= 6; j++) {
        if (j == 5) {
            continue;
        }
        if (!PyLong_CheckExact(values[j])) {
            return 0;
        }
        int overflow = 0;
        out[j] = PyLong_AsLongLongAndOverflow(values[j], &overflow);
        if (overflow) {
            return 0;
        }
    }
    return !__builtin_add_overflow(out[1], out[2], &out[5]) && !__builtin_add_overflow(out[5], out[3], &out[5]) &&
           !__builtin_add_overflow(out[5], out[4], &out[5]);
}

static int exact_ints(PyObject *bucket) {
    if (!PyList_Check(bucket) || PyList_GET_SIZE(bucket) < 7) {
        return 0;
    }
    for (Py_ssize_t j = 0; j < 7; j++) {
        if (!PyLong_CheckExact(PyList_GET_ITEM(bucket, j))) {
            return 0;
        }
    }
    return 1;
}

/* orgs[org] += the event's values (``c_values``: the same as C integers, or
 * NULL when they are not all ints that fit). Into the call's C sums when the
 * (minute, org) has a slot whose bucket is exact; else into the Python bucket
 * (made when missing), after the slot's C sums; a (minute, org) seen for the
 * first time then gets a slot. */
static int add_org(org_table *table, PyObject *orgs, long long minute, PyObject *org, PyObject *const values[7],
                   const long long *c_values) {
    if (!PyUnicode_CheckExact(org)) {
        return accumulate(orgs, org, values, NULL) == NULL ? -1 : 0;
    }
    Py_hash_t hash = PyObject_Hash(org);
    if (hash == -1) {
        return -1;
    }
    org_slot *slot = find_slot(table, minute, org, hash);
    if (slot->bucket != NULL) {
        if (c_values != NULL && slot->exact) {
            long long sums[7];
            for (int j = 0; j < 7; j++) {
                if (__builtin_add_overflow(slot->sums[j], c_values[j], &sums[j])) {
                    if (flush_slot(slot) < 0) { /* then the event's values alone fit */
                        return -1;
                    }
                    memcpy(sums, c_values, sizeof sums);
                    break;
                }
            }
            memcpy(slot->sums, sums, sizeof sums);
            return 0;
        }
        /* In Python, in event order: the C sums so far first. */
        if (flush_slot(slot) < 0) {
            return -1;
        }
        slot->exact = 0;
        return accumulate(orgs, org, values, NULL) == NULL ? -1 : 0;
    }
    PyObject *bucket = accumulate(orgs, org, values, NULL);
    if (bucket == NULL) {
        return -1;
    }
    Py_INCREF(bucket); /* the slot's */
    if (table->used >= ORG_SLOTS_MAX) {
        if (flush_table(table) < 0) {
            Py_DECREF(bucket);
            return -1;
        }
        slot = find_slot(table, minute, org, hash);
    }
    Py_INCREF(org);
    slot->bucket = bucket;
    slot->org = org;
    slot->hash = hash;
    slot->minute = minute;
    slot->exact = exact_ints(bucket);
    memset(slot->sums, 0, sizeof slot->sums);
    table->used++;
    return 0;
}

static PyObject *fold(PyObject *module, PyObject *args) {
    PyObject *events, *seen_by_minute, *pending, *pending_orgs, *canon, *shared_seen;
    long long wm, retention;
    if (!PyArg_ParseTuple(args, "O!LLO!O!O!O!O:fold", &PyList_Type, &events, &wm, &retention, &PyDict_Type,
                          &seen_by_minute, &PyDict_Type, &pending, &PyDict_Type, &pending_orgs, &PyDict_Type, &canon,
                          &shared_seen)) {
        return NULL;
    }
    long long floor = wm - retention;
    long long counted = 0, duplicates = 0, late = 0;
    long long current = 0;
    int have_current = 0;
    PyObject *seen = NULL, *users = NULL, *orgs = NULL; /* owned: the current minute's dicts */
    PyObject *minute_obj = NULL;                          /* owned */
    PyObject *total = NULL;                               /* owned, per event */
    org_table table;
    memset(&table, 0, sizeof table);

    Py_ssize_t n = PyList_GET_SIZE(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (!PyDict_Check(event)) {
            PyErr_SetString(PyExc_TypeError, "fold: an event must be a dict");
            goto error;
        }
        PyObject *ts_obj = field(event, k_ts);
        if (ts_obj == NULL) {
            goto error;
        }
        long long ts = PyLong_AsLongLong(ts_obj);
        if (ts == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (ts > wm) {
            wm = ts;
            floor = wm - retention;
        } else if (ts < floor) {
            late++;
            continue;
        }
        long long minute = ts / MINUTE_MS - ((ts % MINUTE_MS) < 0); /* floor division, as Python's // */
        if (!have_current || minute != current) {
            have_current = 1;
            current = minute;
            Py_CLEAR(seen);
            Py_CLEAR(users);
            Py_CLEAR(orgs);
            Py_XDECREF(minute_obj);
            minute_obj = PyLong_FromLongLong(minute);
            if (minute_obj == NULL) {
                goto error;
            }
            if ((seen = dict_at(seen_by_minute, minute_obj)) == NULL || (users = dict_at(pending, minute_obj)) == NULL ||
                (orgs = dict_at(pending_orgs, minute_obj)) == NULL) {
                goto error;
            }
        }
        PyObject *event_id = field(event, k_event_id);
        PyObject *user = event_id != NULL ? field(event, k_user_id) : NULL;
        if (user == NULL) {
            goto error;
        }
        PyObject *prev = PyDict_GetItemWithError(seen, event_id);
        if (prev == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            PyObject *same = PyDict_GetItemWithError(canon, user);
            if (same == NULL) {
                if (PyErr_Occurred() || PyDict_SetItem(canon, user, user) < 0) {
                    goto error;
                }
                same = user;
            }
            if (PyDict_SetItem(seen, event_id, same) < 0) {
                goto error;
            }
        } else {
            int equal = PyObject_RichCompareBool(prev, user, Py_EQ);
            if (equal < 0) {
                goto error;
            }
            if (!equal) {
                PyObject *r = PyObject_CallFunctionObjArgs(shared_seen, minute_obj, user, event_id, NULL);
                if (r == NULL) {
                    goto error;
                }
                equal = PyObject_IsTrue(r);
                Py_DECREF(r);
                if (equal < 0) {
                    goto error;
                }
            }
            if (equal) {
                duplicates++;
                continue;
            }
        }
        PyObject *values[7];
        values[0] = one;
        if ((values[1] = field(event, k_input)) == NULL || (values[2] = field(event, k_output)) == NULL ||
            (values[3] = field(event, k_cache_read)) == NULL || (values[4] = field(event, k_cache_write)) == NULL ||
            (values[6] = field(event, k_cost)) == NULL) {
            goto error;
        }
        long long c_values[7];
        int in_c = values_in_c(values, c_values);
        if (in_c) {
            total = PyLong_FromLongLong(c_values[5]);
        } else {
            total = PyNumber_Add(values[1], values[2]);
            for (int j = 3; j <= 4 && total != NULL; j++) {
                PyObject *sum = PyNumber_Add(total, values[j]);
                Py_DECREF(total);
                total = sum;
            }
        }
        if (total == NULL) {
            goto error;
        }
        values[5] = total;
        if (accumulate(users, user, values, event_id) == NULL) {
            goto error;
        }
        PyObject *org = field(event, k_org_id); /* read after the user bucket, as in _fold_py */
        if (org == NULL) {
            goto error;
        }
        if (add_org(&table, orgs, minute, org, values, in_c ? c_values : NULL) < 0) {
            goto error;
        }
        Py_CLEAR(total);
        counted++;
    }
    Py_XDECREF(seen);
    Py_XDECREF(users);
    Py_XDECREF(orgs);
    Py_XDECREF(minute_obj);
    if (flush_table(&table) < 0) {
        return NULL;
    }
    return Py_BuildValue("(LLLL)", counted, duplicates, late, wm);

error:
    /* What was folded before the error stays folded, as in _fold_py. */
    if (table.used) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (flush_table(&table) < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        } else {
            PyErr_Restore(type, value, tb);
        }
    }
    Py_XDECREF(total);
    Py_XDECREF(seen);
    Py_XDECREF(users);
    Py_XDECREF(orgs);
    Py_XDECREF(minute_obj);
    return NULL;
}

/* add_org_sums(out, per_minute, source, cache, prefixes) -> None: windows.add_org_sums
 * (reference: windows._add_org_sums_py). ``cache`` maps an org id to the list
 * of its prefixes; ``prefixes(org_id)`` makes a missing one. */
static PyObject *add_org_sums(PyObject *module, PyObject *args) {
    PyObject *out, *per_minute, *source, *cache, *prefixes_fn;
    if (!PyArg_ParseTuple(args, "O!O!OO!O:add_org_sums", &PyDict_Type, &out, &PyDict_Type, &per_minute, &source,
                          &PyDict_Type, &cache, &prefixes_fn)) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *minute, *orgs;
    while (PyDict_Next(per_minute, &pos, &minute, &orgs)) {
        if (!PyDict_Check(orgs)) {
            PyErr_SetString(PyExc_TypeError, "add_org_sums: org sums per minute must be dicts");
            return NULL;
        }
        Py_ssize_t pos2 = 0;
        PyObject *org_id, *sums;
        while (PyDict_Next(orgs, &pos2, &org_id, &sums)) {
            if (!PyList_Check(sums) || PyList_GET_SIZE(sums) < 7) {
                PyErr_SetString(PyExc_TypeError, "add_org_sums: sums must be lists of 7");
                return NULL;
            }
            PyObject *prefixes = PyDict_GetItemWithError(cache, org_id);
            if (prefixes != NULL) {
                Py_INCREF(prefixes);
            } else {
                if (PyErr_Occurred()) {
                    return NULL;
                }
                PyObject *made = PyObject_CallOneArg(prefixes_fn, org_id);
                if (made == NULL) {
                    return NULL;
                }
                prefixes = PySequence_List(made);
                Py_DECREF(made);
                if (prefixes == NULL || PyDict_SetItem(cache, org_id, prefixes) < 0) {
                    Py_XDECREF(prefixes);
                    return NULL;
                }
            }
            /* prefixes: owned, a list */
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(prefixes); i++) {
                PyObject *org = PyList_GET_ITEM(prefixes, i);
                PyObject *by_minute = dict_at(out, org); /* new reference */
                if (by_minute == NULL) {
                    Py_DECREF(prefixes);
                    return NULL;
                }
                PyObject *entry = PyDict_GetItemWithError(by_minute, minute);
                int failed = 0;
                if (entry == NULL) {
                    entry = PyErr_Occurred() ? NULL : PyList_New(9);
                    if (entry == NULL) {
                        failed = 1;
                    } else {
                        Py_INCREF(minute);
                        PyList_SET_ITEM(entry, 0, minute);
                        for (Py_ssize_t j = 0; j < 7; j++) {
                            PyObject *value = PyList_GET_ITEM(sums, j);
                            Py_INCREF(value);
                            PyList_SET_ITEM(entry, j + 1, value);
                        }
                        Py_INCREF(source);
                        PyList_SET_ITEM(entry, 8, source);
                        failed = PyDict_SetItem(by_minute, minute, entry) < 0;
                        Py_DECREF(entry);
                    }
                } else if (!PyList_Check(entry) || PyList_GET_SIZE(entry) < 9) {
                    PyErr_SetString(PyExc_TypeError, "add_org_sums: entries must be lists of 9");
                    failed = 1;
                } else {
                    PyObject *old = PyList_GET_ITEM(entry, 8);
                    PyObject *merged = PyNumber_Or(old, source);
                    if (merged == NULL) {
                        failed = 1;
                    } else {
                        PyList_SET_ITEM(entry, 8, merged);
                        Py_DECREF(old);
                    }
                    failed = failed || add_into(entry, 1, PySequence_Fast_ITEMS(sums)) < 0;
                }
                Py_DECREF(by_minute);
                if (failed) {
                    Py_DECREF(prefixes);
                    return NULL;
                }
            }
            Py_DECREF(prefixes);
        }
    }
    Py_RETURN_NONE;
}

/* org_apply(entries, tags, open_record, span) -> (newest minute or -1, conflicts):
 * the per-entry loop of windows.OrgFold.apply (reference: OrgFold._apply_py).
 * tags: [(bit, source partition as str, offset)]; open_record(first minute)
 * returns the (copied) slots list of the record holding that minute. */
static PyObject *org_apply(PyObject *module, PyObject *args) {
    PyObject *entries, *tags, *open_record;
    long long span;
    if (!PyArg_ParseTuple(args, "O!O!OL:org_apply", &PyList_Type, &entries, &PyList_Type, &tags, &open_record,
                          &span)) {
        return NULL;
    }
    if (span <= 0 || PyList_GET_SIZE(tags) > 62) {
        PyErr_SetString(PyExc_ValueError, "org_apply: bad span or too many tags");
        return NULL;
    }
    Py_ssize_t n_tags = PyList_GET_SIZE(tags);
    long long bits[62];
    PyObject *parts[62], *offsets[62]; /* borrowed from tags */
    for (Py_ssize_t t = 0; t < n_tags; t++) {
        PyObject *tag = PyList_GET_ITEM(tags, t);
        if (!PyTuple_Check(tag) || PyTuple_GET_SIZE(tag) != 3) {
            PyErr_SetString(PyExc_TypeError, "org_apply: a tag is (bit, partition, offset)");
            return NULL;
        }
        bits[t] = PyLong_AsLongLong(PyTuple_GET_ITEM(tag, 0));
        if (bits[t] == -1 && PyErr_Occurred()) {
            return NULL;
        }
        parts[t] = PyTuple_GET_ITEM(tag, 1);
        offsets[t] = PyTuple_GET_ITEM(tag, 2);
    }
    long long newest = -1, current = 0, conflicts = 0;
    int have_current = 0;
    PyObject *slots = NULL; /* owned */
    Py_ssize_t n = PyList_GET_SIZE(entries);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!PyList_Check(entry) || PyList_GET_SIZE(entry) < 9) {
            PyErr_SetString(PyExc_TypeError, "org_apply: an entry is [minute, 7 sums, sources]");
            goto error;
        }
        long long minute = PyLong_AsLongLong(PyList_GET_ITEM(entry, 0));
        long long sources = minute == -1 && PyErr_Occurred() ? 0 : PyLong_AsLongLong(PyList_GET_ITEM(entry, 8));
        if (PyErr_Occurred()) {
            goto error;
        }
        long long first = minute - (((minute % span) + span) % span);
        if (!have_current || first != current) {
            have_current = 1;
            current = first;
            Py_XDECREF(slots);
            slots = PyObject_CallFunction(open_record, "L", first);
            if (slots == NULL) {
                goto error;
            }
            if (!PyList_Check(slots) || PyList_GET_SIZE(slots) != span) {
                PyErr_SetString(PyExc_TypeError, "org_apply: a record is a list of span slots");
                goto error;
            }
        }
        if (minute > newest) {
            newest = minute;
        }
        Py_ssize_t slot = (Py_ssize_t)(minute - first);
        PyObject *bucket = PyList_GET_ITEM(slots, slot);
        if (bucket == Py_None) {
            bucket = PyList_New(8);
            if (bucket == NULL) {
                goto error;
            }
            for (Py_ssize_t j = 0; j < 7; j++) {
                PyObject *zero = PyLong_FromLong(0);
                if (zero == NULL) {
                    Py_DECREF(bucket);
                    goto error;
                }
                PyList_SET_ITEM(bucket, j, zero);
            }
            PyObject *applied = PyDict_New();
            if (applied == NULL) {
                Py_DECREF(bucket);
                goto error;
            }
            PyList_SET_ITEM(bucket, 7, applied);
            PyList_SetItem(slots, slot, bucket); /* steals; drops the None */
        } else if (!PyList_Check(bucket) || PyList_GET_SIZE(bucket) < 8 || !PyDict_Check(PyList_GET_ITEM(bucket, 7))) {
            PyErr_SetString(PyExc_TypeError, "org_apply: a bucket is [7 sums, applied]");
            goto error;
        }
        PyObject *applied = PyList_GET_ITEM(bucket, 7);
        Py_ssize_t mine = 0, seen = 0;
        for (Py_ssize_t t = 0; t < n_tags; t++) {
            if (!(sources & bits[t])) {
                continue;
            }
            mine++;
            PyObject *done = PyDict_GetItemWithError(applied, parts[t]);
            if (done == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                continue;
            }
            int ge = PyObject_RichCompareBool(done, offsets[t], Py_GE);
            if (ge < 0) {
                goto error;
            }
            seen += ge;
        }
        if (seen) {
            if (seen != mine) {
                conflicts++;
            }
            continue; /* applied before (a re-sent delta after a crash) */
        }
        for (Py_ssize_t t = 0; t < n_tags; t++) {
            if ((sources & bits[t]) && PyDict_SetItem(applied, parts[t], offsets[t]) < 0) {
                goto error;
            }
        }
        if (add_into(bucket, 0, PySequence_Fast_ITEMS(entry) + 1) < 0) {
            goto error;
        }
    }
    Py_XDECREF(slots);
    return Py_BuildValue("(LL)", newest, conflicts);

error:
    Py_XDECREF(slots);
    return NULL;
}

static PyMethodDef methods[] = {
    {"org_apply", org_apply, METH_VARARGS, "Apply one org-delta message's entries (see windows.OrgFold)."},
    {"fold", fold, METH_VARARGS, "Fold one envelope's events into a partition's pending windows (see windows.py)."},
    {"add_org_sums", add_org_sums, METH_VARARGS, "Org sums per org id -> per org prefix (see windows.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fold", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fold(void) {
    if ((k_ts = PyUnicode_InternFromString("ts_ms")) == NULL ||
        (k_event_id = PyUnicode_InternFromString("event_id")) == NULL ||
        (k_user_id = PyUnicode_InternFromString("user_id")) == NULL ||
        (k_org_id = PyUnicode_InternFromString("org_id")) == NULL ||
        (k_input = PyUnicode_InternFromString("input_tokens")) == NULL ||
        (k_output = PyUnicode_InternFromString("output_tokens")) == NULL ||
        (k_cache_read = PyUnicode_InternFromString("cache_read_tokens")) == NULL ||
        (k_cache_write = PyUnicode_InternFromString("cache_write_tokens")) == NULL ||
        (k_cost = PyUnicode_InternFromString("cost_nanos")) == NULL || (one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
