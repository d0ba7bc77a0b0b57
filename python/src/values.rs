//! `Value` and `Array` of one of `array`'s typecodes, named. Their own lock makes each get and set
//! whole; Python's `get_lock()` is a separate `RLock` kept by the Python layer.

use crate::to_py;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmwire::{Array, Value};

/// Runs `$body` with `$v` bound to the typed object behind `$e` and `$t` to its element type.
macro_rules! each_type {
    ($enum:ident, $e:expr, $v:ident, $body:expr) => {
        match $e {
            $enum::B($v) => {
                type T = i8;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::UB($v) => {
                type T = u8;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::H($v) => {
                type T = i16;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::UH($v) => {
                type T = u16;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::I($v) => {
                type T = i32;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::UI($v) => {
                type T = u32;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::L($v) => {
                type T = i64;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::UL($v) => {
                type T = u64;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::F($v) => {
                type T = f32;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
            $enum::D($v) => {
                type T = f64;
                let _ = std::marker::PhantomData::<T>;
                $body
            }
        }
    };
}

/// Builds the variant for typecode `$tc` with `$make` (a generic expression over `T`).
macro_rules! by_code {
    ($enum:ident, $tc:expr, $make:ident) => {
        match $tc {
            "b" => $enum::B($make!(i8)),
            "B" | "c" | "?" => $enum::UB($make!(u8)),
            "h" => $enum::H($make!(i16)),
            "H" => $enum::UH($make!(u16)),
            "i" => $enum::I($make!(i32)),
            "I" => $enum::UI($make!(u32)),
            "l" | "q" | "n" => $enum::L($make!(i64)),
            "L" | "Q" | "N" | "P" => $enum::UL($make!(u64)),
            "f" => $enum::F($make!(f32)),
            "d" => $enum::D($make!(f64)),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unsupported typecode {other:?}"
                )))
            }
        }
    };
}

enum AnyValue {
    B(Value<i8>),
    UB(Value<u8>),
    H(Value<i16>),
    UH(Value<u16>),
    I(Value<i32>),
    UI(Value<u32>),
    L(Value<i64>),
    UL(Value<u64>),
    F(Value<f32>),
    D(Value<f64>),
}

enum AnyArray {
    B(Array<i8>),
    UB(Array<u8>),
    H(Array<i16>),
    UH(Array<u16>),
    I(Array<i32>),
    UI(Array<u32>),
    L(Array<i64>),
    UL(Array<u64>),
    F(Array<f32>),
    D(Array<f64>),
}

/// A Python number as `T` (ints wrap as ctypes' do; floats for float codes).
trait FromPy: Sized {
    fn from_py(o: &Bound<'_, PyAny>) -> PyResult<Self>;
}
macro_rules! int_from_py {
    ($($t:ty),*) => {$(
        impl FromPy for $t {
            fn from_py(o: &Bound<'_, PyAny>) -> PyResult<Self> {
                if let Ok(b) = o.downcast::<PyBytes>() {
                    // typecode 'c': a bytes of length 1
                    return match b.as_bytes() {
                        [c] => Ok(*c as $t),
                        _ => Err(PyTypeError::new_err("one character bytes expected")),
                    };
                }
                let i: i128 = o.extract().or_else(|_| {
                    o.call_method0("__index__")?.extract::<i128>()
                })?;
                Ok(i as $t)
            }
        }
    )*};
}
int_from_py!(i8, u8, i16, u16, i32, u32, i64, u64);
impl FromPy for f32 {
    fn from_py(o: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(o.extract::<f64>()? as f32)
    }
}
impl FromPy for f64 {
    fn from_py(o: &Bound<'_, PyAny>) -> PyResult<Self> {
        o.extract::<f64>()
    }
}

#[pyclass(module = "shmwire._shmwire", name = "RawValue", frozen)]
pub(crate) struct RawValue {
    v: AnyValue,
    name: String,
    typecode: String,
}

#[pymethods]
impl RawValue {
    #[staticmethod]
    fn create(name: String, typecode: String, init: &Bound<'_, PyAny>) -> PyResult<RawValue> {
        macro_rules! make {
            ($t:ty) => {
                Value::<$t>::create(&name, <$t>::from_py(init)?).map_err(to_py)?
            };
        }
        let v = by_code!(AnyValue, typecode.as_str(), make);
        Ok(RawValue { v, name, typecode })
    }

    #[staticmethod]
    fn open(name: String, typecode: String) -> PyResult<RawValue> {
        macro_rules! make {
            ($t:ty) => {
                Value::<$t>::open(&name).map_err(to_py)?
            };
        }
        let v = by_code!(AnyValue, typecode.as_str(), make);
        Ok(RawValue { v, name, typecode })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn typecode(&self) -> String {
        self.typecode.clone()
    }

    fn get(&self, py: Python<'_>) -> PyResult<PyObject> {
        each_type!(AnyValue, &self.v, v, {
            let x = py.allow_threads(|| v.get()).map_err(to_py)?;
            Ok(x.into_py(py))
        })
    }

    fn set(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
        each_type!(AnyValue, &self.v, v, {
            let x = T::from_py(x)?;
            py.allow_threads(|| v.set(x)).map_err(to_py)
        })
    }
}

#[pyclass(module = "shmwire._shmwire", name = "RawArray", frozen)]
pub(crate) struct RawArray {
    a: AnyArray,
    name: String,
    typecode: String,
}

fn index(i: isize, len: usize) -> PyResult<usize> {
    let j = if i < 0 { i + len as isize } else { i };
    if j < 0 || j as usize >= len {
        return Err(PyIndexError::new_err("invalid index"));
    }
    Ok(j as usize)
}

#[pymethods]
impl RawArray {
    /// A new array of `init`'s items (any iterable of numbers).
    #[staticmethod]
    fn create(name: String, typecode: String, init: &Bound<'_, PyAny>) -> PyResult<RawArray> {
        macro_rules! make {
            ($t:ty) => {{
                let items = init
                    .iter()?
                    .map(|o| <$t>::from_py(&o?))
                    .collect::<PyResult<Vec<$t>>>()?;
                Array::<$t>::create(&name, &items).map_err(to_py)?
            }};
        }
        let a = by_code!(AnyArray, typecode.as_str(), make);
        Ok(RawArray { a, name, typecode })
    }

    #[staticmethod]
    fn open(name: String, typecode: String) -> PyResult<RawArray> {
        macro_rules! make {
            ($t:ty) => {
                Array::<$t>::open(&name).map_err(to_py)?
            };
        }
        let a = by_code!(AnyArray, typecode.as_str(), make);
        Ok(RawArray { a, name, typecode })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn typecode(&self) -> String {
        self.typecode.clone()
    }

    fn __len__(&self) -> usize {
        each_type!(AnyArray, &self.a, a, a.len())
    }

    fn get(&self, py: Python<'_>, i: isize) -> PyResult<PyObject> {
        each_type!(AnyArray, &self.a, a, {
            let i = index(i, a.len())?;
            let x = py.allow_threads(|| a.get(i)).map_err(to_py)?;
            Ok(x.into_py(py))
        })
    }

    fn set(&self, py: Python<'_>, i: isize, x: &Bound<'_, PyAny>) -> PyResult<()> {
        each_type!(AnyArray, &self.a, a, {
            let i = index(i, a.len())?;
            let x = T::from_py(x)?;
            py.allow_threads(|| a.set(i, x)).map_err(to_py)
        })
    }

    fn to_list(&self, py: Python<'_>) -> PyResult<PyObject> {
        each_type!(AnyArray, &self.a, a, {
            let v = py.allow_threads(|| a.to_vec()).map_err(to_py)?;
            Ok(v.into_py(py))
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawValue>()?;
    m.add_class::<RawArray>()?;
    Ok(())
}
