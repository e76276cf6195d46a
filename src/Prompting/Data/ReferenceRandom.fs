namespace Prompting.Data

open Prompting

/// The Mersenne Twister MT19937 (Matsumoto and Nishimura's reference code), as NumPy's legacy
/// `RandomState` and CPython's `random` module use it, so that class orders the reference
/// implementations draw with them can be regenerated exactly.
type Mt19937 private (key: uint32[]) =
    let mutable pos = 624

    /// `init_genrand(s)`: NumPy's `np.random.seed(s)` for an integer s in [0, 2^32).
    static member InitGenrand(seed: uint32) =
        let key = Array.zeroCreate<uint32> 624
        key[0] <- seed
        for i in 1..623 do
            key[i] <- 1812433253u * (key[i - 1] ^^^ (key[i - 1] >>> 30)) + uint32 i
        Mt19937 key

    /// `init_by_array(init_key)`: CPython's `random.seed(n)` with the 32-bit words of |n|, least
    /// significant first (one word 0 for n = 0).
    static member InitByArray(initKey: uint32[]) =
        let mt: uint32[] = (Mt19937.InitGenrand 19650218u).Key
        let n = 624
        let keyLength = max 1 initKey.Length
        let initKey = if initKey.Length = 0 then [| 0u |] else initKey
        let mutable i = 1
        let mutable j = 0
        for _ in 1 .. max n keyLength do
            mt[i] <- (mt[i] ^^^ ((mt[i - 1] ^^^ (mt[i - 1] >>> 30)) * 1664525u)) + initKey[j] + uint32 j
            i <- i + 1
            j <- j + 1
            if i >= n then
                mt[0] <- mt[n - 1]
                i <- 1
            if j >= keyLength then j <- 0
        for _ in 1 .. n - 1 do
            mt[i] <- (mt[i] ^^^ ((mt[i - 1] ^^^ (mt[i - 1] >>> 30)) * 1566083941u)) - uint32 i
            i <- i + 1
            if i >= n then
                mt[0] <- mt[n - 1]
                i <- 1
        mt[0] <- 0x80000000u
        Mt19937 mt

    member private _.Key = key

    /// `genrand_int32`: the next tempered 32-bit output.
    member _.NextUInt32() =
        if pos >= 624 then
            for k in 0..623 do
                let y = (key[k] &&& 0x80000000u) ||| (key[(k + 1) % 624] &&& 0x7fffffffu)
                key[k] <- key[(k + 397) % 624] ^^^ (y >>> 1) ^^^ (if y &&& 1u = 0u then 0u else 0x9908b0dfu)
            pos <- 0
        let mutable y = key[pos]
        pos <- pos + 1
        y <- y ^^^ (y >>> 11)
        y <- y ^^^ ((y <<< 7) &&& 0x9d2c5680u)
        y <- y ^^^ ((y <<< 15) &&& 0xefc60000u)
        y ^^^ (y >>> 18)

/// NumPy's legacy global generator (`np.random.seed`, `np.random.permutation`), as LAMDA-PILOT
/// draws its class orders: `np.random.seed(seed); np.random.permutation(n)`.
module NumpyRandom =
    /// `random_interval(max)`: a uniform integer in [0, max] by masked rejection on 32-bit draws.
    let interval (rng: Mt19937) (max: uint32) =
        if max = 0u then 0u
        else
            let mutable mask = max
            for shift in [ 1; 2; 4; 8; 16 ] do
                mask <- mask ||| (mask >>> shift)
            let mutable value = rng.NextUInt32() &&& mask
            while value > max do
                value <- rng.NextUInt32() &&& mask
            value

    /// `np.random.seed(seed); np.random.permutation(n)`: the shuffle of arange(n) that NumPy's
    /// legacy RandomState makes (i from n-1 down to 1 swaps with random_interval(i)).
    let permutationFrom (rng: Mt19937) (n: int) =
        let a = Array.init n id
        for i in n - 1 .. -1 .. 1 do
            let j = int (interval rng (uint32 i))
            let t = a[i]
            a[i] <- a[j]
            a[j] <- t
        a

    /// `np.random.seed(seed); np.random.permutation(n)` for a seed in [0, 2^32).
    let permutation (seed: int64) (n: int) =
        if seed < 0L || seed > 0xffffffffL then Errors.fail "NumPy seed %d: must be between 0 and 2^32 - 1" seed
        permutationFrom (Mt19937.InitGenrand(uint32 seed)) n

/// CPython's `random` module (`random.seed(n)` for an int n, `random.shuffle`), as CODA-Prompt
/// draws its class orders when `rand_split` is set: `random.seed(seed); random.shuffle(order)`.
module PythonRandom =
    /// The generator `random.seed(seed)` leaves.
    let seeded (seed: int64) =
        let magnitude = abs seed
        let words =
            if magnitude = 0L then [| 0u |]
            elif magnitude <= 0xffffffffL then [| uint32 magnitude |]
            else [| uint32 (magnitude &&& 0xffffffffL); uint32 (magnitude >>> 32) |]
        Mt19937.InitByArray words

    /// `_randbelow(n)` through `getrandbits(k)`, k = n.bit_length() (n < 2^31).
    let randBelow (rng: Mt19937) (n: int) =
        let k = 32 - System.Numerics.BitOperations.LeadingZeroCount(uint32 n)
        let draw () = int (rng.NextUInt32() >>> (32 - k))
        let mutable r = draw ()
        while r >= n do
            r <- draw ()
        r

    /// `random.seed(seed); order = list(range(n)); random.shuffle(order)`.
    let shuffled (seed: int64) (n: int) =
        let rng = seeded seed
        let a = Array.init n id
        for i in n - 1 .. -1 .. 1 do
            let j = randBelow rng (i + 1)
            let t = a[i]
            a[i] <- a[j]
            a[j] <- t
        a
