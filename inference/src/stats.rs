//! Small numerical pieces: the normal tail, a bounded normal's tail probability, the
//! logistic function. Plain `f64` arithmetic, deterministic on every platform.

/// erfc(x), fractional error below 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let tail = t * poly.exp();
    if x >= 0.0 { tail } else { 2.0 - tail }
}

/// P(Z >= x) for a standard normal Z.
pub fn normal_sf(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// P(T >= units | lower <= T <= upper) for an integer truth T read as a normal with `mean`
/// and `sd` (continuity-corrected by half a unit). When the bounds leave the normal no mass,
/// all of it sits on the bound nearest the mean.
pub fn probability_from(units: f64, mean: f64, sd: f64, lower: f64, upper: f64) -> f64 {
    if units > upper {
        return 0.0;
    }
    if units <= lower {
        return 1.0;
    }
    let tail = |x: f64| normal_sf((x - mean) / sd);
    let top = if upper.is_finite() {
        tail(upper + 0.5)
    } else {
        0.0
    };
    let mass = tail(lower - 0.5) - top;
    if mass < 1e-12 {
        // The bounds contradict the normal: the truth sits at the nearer bound.
        return if mean < lower { 0.0 } else { 1.0 };
    }
    ((tail(units - 0.5) - top) / mass).clamp(0.0, 1.0)
}

/// 1 / (1 + e^-x).
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// ln(p / (1 - p)), with p kept inside [1e-6, 1 - 1e-6].
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_tail_matches_known_values() {
        for (x, expected) in [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (-1.96, 0.975_002_1),
            (3.0, 0.001_349_9),
        ] {
            assert!((normal_sf(x) - expected).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn bounded_probabilities() {
        assert_eq!(probability_from(3.0, 10.0, 1.0, 0.0, 2.0), 0.0);
        assert_eq!(probability_from(3.0, 0.0, 1.0, 5.0, f64::INFINITY), 1.0);
        let p = probability_from(10.0, 10.0, 2.0, 0.0, f64::INFINITY);
        assert!((p - normal_sf(-0.25)).abs() < 1e-6);
        // A floor far above the mean: the truth sits on the floor.
        assert_eq!(probability_from(6.0, -50.0, 1.0, 5.0, f64::INFINITY), 0.0);
    }
}
